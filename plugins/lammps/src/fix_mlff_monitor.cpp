#include "fix_mlff_monitor.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "pair_mlff.h"
#include "timer.h"
#include "update.h"
#include "utils.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>

using namespace LAMMPS_NS;
using namespace FixConst;

namespace {

constexpr double BOND_SKIN = 0.3;    // Angstrom, as ASE's NeighborList default (MDsim)

// Concatenate every rank's `mine` on rank 0 (empty elsewhere), in rank order.
template <typename T>
std::vector<T> gather_to_root(MPI_Comm world, int me, int nprocs, const std::vector<T> &mine,
                              MPI_Datatype type)
{
  int count = (int) mine.size();
  std::vector<int> counts(nprocs), offsets(nprocs, 0);
  MPI_Gather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, world);
  std::vector<T> all;
  if (me == 0) {
    for (int p = 1; p < nprocs; p++) offsets[p] = offsets[p - 1] + counts[p - 1];
    all.resize(offsets.back() + counts.back());
  }
  MPI_Gatherv(mine.data(), count, type, all.data(), counts.data(), offsets.data(), type, 0,
              world);
  return all;
}

bool yes_no(Error *error, const std::string &key, const std::string &value)
{
  if (value == "yes") return true;
  if (value == "no") return false;
  error->all(FLERR, "Fix mlff/monitor: {} must be yes or no, not {}", key, value);
}

}    // namespace

FixMLFFMonitor::FixMLFFMonitor(LAMMPS *lmp, int narg, char **arg) : Fix(lmp, narg, arg)
{
  if (narg < 5)
    error->all(FLERR, "Fix mlff/monitor: usage: fix ID group mlff/monitor N model.pt "
                      "[threshold X] [explore yes|no] [stop yes|no] [stop_unexplored yes|no] "
                      "[file F] [frames F] [elements E1 E2 ...]");
  nevery = utils::inumeric(FLERR, arg[3], false, lmp);
  if (nevery <= 0) error->all(FLERR, "Fix mlff/monitor: N must be a positive number of steps");
  model_path_ = arg[4];
  int iarg = 5;
  while (iarg < narg) {
    const std::string key = arg[iarg];
    if (key == "elements") {
      type_z_.assign(atom->ntypes + 1, 0);
      if (iarg + atom->ntypes >= narg)
        error->all(FLERR, "Fix mlff/monitor: elements needs one symbol per atom type ({})",
                   atom->ntypes);
      for (int t = 1; t <= atom->ntypes; t++) {
        const std::string symbol = arg[iarg + t];
        type_z_[t] = MLFF::atomic_number(symbol);
        if (type_z_[t] < 0)
          error->all(FLERR, "Fix mlff/monitor: unknown element symbol {} for type {}", symbol, t);
      }
      iarg += 1 + atom->ntypes;
      continue;
    }
    if (iarg + 1 >= narg) error->all(FLERR, "Fix mlff/monitor: keyword {} needs a value", key);
    const std::string value = arg[iarg + 1];
    if (key == "threshold") {
      threshold_ = utils::numeric(FLERR, value, false, lmp);
      if (threshold_ <= 0.0) error->all(FLERR, "Fix mlff/monitor: threshold must be positive");
    } else if (key == "explore") {
      explore_ = yes_no(error, key, value);
    } else if (key == "stop") {
      stop_ = yes_no(error, key, value);
    } else if (key == "stop_unexplored") {
      stop_unexplored_ = yes_no(error, key, value);
    } else if (key == "file") {
      file_path_ = value;
    } else if (key == "frames") {
      frames_path_ = value;
    } else {
      error->all(FLERR, "Fix mlff/monitor: unknown keyword {}", key);
    }
    iarg += 2;
  }

  vector_flag = 1;
  size_vector = 4;
  global_freq = nevery;
  extvector = 0;

  if (comm->me == 0) {
    try {
      model_ = std::make_unique<MLFF::ModelFile>(
          MLFF::load_model_file(model_path_, torch::Device(torch::kCPU)));
    } catch (const std::exception &e) {
      error->one(FLERR, "Fix mlff/monitor: {}", e.what());
    }
    if (!file_path_.empty()) {
      fp_ = fopen(file_path_.c_str(), "w");
      if (!fp_) error->one(FLERR, "Fix mlff/monitor: cannot open file {}", file_path_);
      fprintf(fp_, "# step\tcheck\tdetails\n");
      fflush(fp_);
    }
    if (!frames_path_.empty()) {
      FILE *frames = fopen(frames_path_.c_str(), "w");    // start empty; frames are appended
      if (!frames) error->one(FLERR, "Fix mlff/monitor: cannot open frames file {}", frames_path_);
      fclose(frames);
    }
  }
}

FixMLFFMonitor::~FixMLFFMonitor()
{
  if (fp_) fclose(fp_);
}

int FixMLFFMonitor::setmask()
{
  return END_OF_STEP;
}

void FixMLFFMonitor::init()
{
  if (type_z_.empty()) {
    auto *pair = dynamic_cast<PairMLFF *>(force->pair_match("mlff", 0));
    if (!pair)
      error->all(FLERR, "Fix mlff/monitor needs pair_style mlff or the keyword elements E1 E2 ...");
    type_z_ = pair->type_atomic_numbers();
  }
  for (int t = 1; t <= atom->ntypes; t++)
    if (type_z_[t] <= 0)
      error->all(FLERR, "Fix mlff/monitor: atom type {} has no element (NULL in pair_coeff)", t);
  if (atom->natoms > std::numeric_limits<int>::max() / 4)
    error->all(FLERR, "Fix mlff/monitor: too many atoms to gather");
}

void FixMLFFMonitor::gather(std::vector<double> &positions, std::vector<int> &numbers)
{
  const int nlocal = atom->nlocal;
  std::vector<double> mine(5 * nlocal);
  for (int i = 0; i < nlocal; i++) {
    double x[3] = {atom->x[i][0], atom->x[i][1], atom->x[i][2]};
    domain->unmap(x, atom->image[i]);
    mine[5 * i] = (double) atom->tag[i];
    mine[5 * i + 1] = x[0];
    mine[5 * i + 2] = x[1];
    mine[5 * i + 3] = x[2];
    mine[5 * i + 4] = (double) type_z_[atom->type[i]];
  }
  std::vector<double> all = gather_to_root(world, comm->me, comm->nprocs, mine, MPI_DOUBLE);
  if (comm->me != 0) return;
  // order by atom ID so that frames are comparable from step to step
  const int natoms = (int) (all.size() / 5);
  std::vector<std::pair<double, int>> order(natoms);
  for (int k = 0; k < natoms; k++) order[k] = {all[5 * k], k};
  std::sort(order.begin(), order.end());
  positions.resize(3 * natoms);
  numbers.resize(natoms);
  tags_.resize(natoms);
  for (int n = 0; n < natoms; n++) {
    const int k = order[n].second;
    tags_[n] = (long) order[n].first;
    for (int d = 0; d < 3; d++) positions[3 * n + d] = all[5 * k + 1 + d];
    numbers[n] = (int) all[5 * k + 4];
  }
}

double FixMLFFMonitor::bond_length(const std::vector<double> &positions, int a, int b) const
{
  double d[3];
  for (int k = 0; k < 3; k++) d[k] = positions[3 * b + k] - positions[3 * a + k];
  domain->minimum_image(FLERR, d);
  return std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
}

void FixMLFFMonitor::find_bonds(const std::vector<double> &positions,
                                const std::vector<int> &numbers)
{
  // Topology from the data file when there is one (atom IDs are 1..natoms, tag-ordered).
  std::set<std::pair<int, int>> topology;
  if (atom->molecular == Atom::MOLECULAR && atom->num_bond) {
    std::vector<int> mine;
    for (int i = 0; i < atom->nlocal; i++)
      for (int m = 0; m < atom->num_bond[i]; m++) {
        mine.push_back((int) atom->tag[i]);
        mine.push_back((int) atom->bond_atom[i][m]);
      }
    std::vector<int> all = gather_to_root(world, comm->me, comm->nprocs, mine, MPI_INT);
    for (size_t k = 0; k + 1 < all.size(); k += 2) {
      // atom IDs -> positions in the ID-ordered arrays (IDs need not be contiguous)
      auto index = [&](long tag) {
        return (int) (std::lower_bound(tags_.begin(), tags_.end(), tag) - tags_.begin());
      };
      int a = index(all[k]), b = index(all[k + 1]);
      topology.insert({std::min(a, b), std::max(a, b)});
    }
  }
  if (comm->me != 0) return;
  bonds_.assign(topology.begin(), topology.end());
  if (bonds_.empty()) {
    // Covalent radii + 0.3 Angstrom, minimum image. Small systems: every pair; large ones:
    // a periodic grid of >= 4 Angstrom cells on wrapped coordinates.
    const int natoms = (int) numbers.size();
    auto bonded = [&](int a, int b) {
      const double limit =
          MLFF::covalent_radius(numbers[a]) + MLFF::covalent_radius(numbers[b]) + BOND_SKIN;
      return bond_length(positions, a, b) < limit;
    };
    std::set<std::pair<int, int>> found;
    if (natoms <= 4000 || domain->triclinic) {
      for (int a = 0; a < natoms; a++)
        for (int b = a + 1; b < natoms; b++)
          if (bonded(a, b)) found.insert({a, b});
    } else {
      int cells[3];
      std::vector<std::array<int, 3>> cell_of(natoms);
      std::map<std::array<int, 3>, std::vector<int>> grid;
      for (int d = 0; d < 3; d++) cells[d] = std::max(1, (int) (domain->prd[d] / 4.0));
      for (int n = 0; n < natoms; n++) {
        double x[3] = {positions[3 * n], positions[3 * n + 1], positions[3 * n + 2]};
        domain->remap(x);
        for (int d = 0; d < 3; d++) {
          int c = (int) ((x[d] - domain->boxlo[d]) / domain->prd[d] * cells[d]);
          cell_of[n][d] = std::min(std::max(c, 0), cells[d] - 1);
        }
        grid[cell_of[n]].push_back(n);
      }
      for (int a = 0; a < natoms; a++)
        for (int dx = -1; dx <= 1; dx++)
          for (int dy = -1; dy <= 1; dy++)
            for (int dz = -1; dz <= 1; dz++) {
              std::array<int, 3> key = {cell_of[a][0] + dx, cell_of[a][1] + dy,
                                        cell_of[a][2] + dz};
              for (int d = 0; d < 3; d++) key[d] = ((key[d] % cells[d]) + cells[d]) % cells[d];
              auto other = grid.find(key);
              if (other == grid.end()) continue;
              for (int b : other->second)
                if (b > a && bonded(a, b)) found.insert({a, b});
            }
    }
    bonds_.assign(found.begin(), found.end());
  }
  reference_.resize(bonds_.size());
  for (size_t k = 0; k < bonds_.size(); k++)
    reference_[k] = bond_length(positions, bonds_[k].first, bonds_[k].second);
}

void FixMLFFMonitor::setup(int)
{
  // Reference bond lengths come from the first run's starting frame; later `run` commands
  // (e.g. a long run in chunks) keep them.
  stopped_ = false;
  check(!have_reference_);
  have_reference_ = true;
}

void FixMLFFMonitor::end_of_step()
{
  check(false);
}

void FixMLFFMonitor::check(bool first)
{
  std::vector<double> positions;
  std::vector<int> numbers;
  gather(positions, numbers);
  if (first) find_bonds(positions, numbers);

  int stop = 0;
  if (comm->me == 0) {
    // bonds
    double worst = 0.0;
    size_t worst_bond = 0;
    for (size_t k = 0; k < bonds_.size(); k++) {
      const double deviation =
          std::fabs(bond_length(positions, bonds_[k].first, bonds_[k].second) - reference_[k]);
      if (deviation > worst) {
        worst = deviation;
        worst_bond = k;
      }
    }
    last_deviation_ = worst;
    std::vector<std::string> reasons;
    bool collapsed = false, unexplored = false;
    if (!bonds_.empty() && worst > threshold_) {
      collapsed = true;
      const auto &b = bonds_[worst_bond];
      reasons.push_back(fmt::format(
          "collapse: bond {}-{} is {:.3f} A (reference {:.3f} A, deviation {:.3f} A)",
          b.first + 1, b.second + 1, bond_length(positions, b.first, b.second),
          reference_[worst_bond], worst));
    }
    // exploration
    last_ratio_ = std::numeric_limits<double>::quiet_NaN();
    if (explore_) {
      const int64_t natoms = (int64_t) numbers.size();
      auto pos = torch::from_blob(positions.data(), {natoms, 3}, torch::kFloat64).clone();
      std::vector<int64_t> z(numbers.begin(), numbers.end());
      auto zt = torch::from_blob(z.data(), {natoms}, torch::kInt64).clone();
      torch::Tensor result;
      try {
        torch::NoGradGuard no_grad;
        if (model_->periodic_known && model_->periodic) {
          auto cell = torch::zeros({3, 3}, torch::kFloat64);
          cell[0][0] = domain->xprd;
          cell[1][0] = domain->xy;
          cell[1][1] = domain->yprd;
          cell[2][0] = domain->xz;
          cell[2][1] = domain->yz;
          cell[2][2] = domain->zprd;
          auto pbc = torch::tensor({(bool) domain->xperiodic, (bool) domain->yperiodic,
                                    (bool) domain->zperiodic});
          result = model_->module.get_method("explore_periodic")({pos, zt, cell, pbc}).toTensor();
        } else {
          result = model_->module.get_method("explore")({pos, zt}).toTensor();
        }
      } catch (const c10::Error &e) {
        error->one(FLERR, "Fix mlff/monitor: explore() failed: {}", e.what_without_backtrace());
      }
      const double cluster = result[0].item<double>(), ratio = result[1].item<double>();
      if (cluster >= 0.0 && std::isfinite(ratio)) {
        last_ratio_ = ratio;
        if (ratio > 1.0) {
          unexplored = true;
          reasons.push_back(fmt::format("unexplored: nearest cluster {}, distance/radius {:.3f}",
                                        (int) cluster, ratio));
        }
      }
    }
    const bigint step = update->ntimestep;
    if (fp_) {
      if (reasons.empty())
        fprintf(fp_, "%ld\tok\tlargest bond deviation %.3f A\n", (long) step, last_deviation_);
      for (const auto &reason : reasons) fprintf(fp_, "%ld\tFLAGGED\t%s\n", (long) step, reason.c_str());
      fflush(fp_);
    }
    if (!reasons.empty()) {
      flagged_++;
      if (!frames_path_.empty()) write_frame(positions, numbers, reasons.front());
      if ((stop_ && collapsed) || (stop_unexplored_ && unexplored)) {
        stop = 1;
        utils::logmesg(lmp, "fix mlff/monitor: stopping the run at step {}: {}\n", step,
                       reasons.front());
      }
    }
  }
  MPI_Bcast(&stop, 1, MPI_INT, 0, world);
  MPI_Bcast(&last_deviation_, 1, MPI_DOUBLE, 0, world);
  MPI_Bcast(&last_ratio_, 1, MPI_DOUBLE, 0, world);
  MPI_Bcast(&flagged_, 1, MPI_INT, 0, world);
  if (stop) {
    stopped_ = true;
    timer->force_timeout();    // the run loop ends after this step, as with fix halt
  }
}

void FixMLFFMonitor::write_frame(const std::vector<double> &positions,
                                 const std::vector<int> &numbers, const std::string &reason)
{
  FILE *out = fopen(frames_path_.c_str(), "a");
  if (!out) error->one(FLERR, "Fix mlff/monitor: cannot write frames file {}", frames_path_);
  fprintf(out, "%zu\n", numbers.size());
  std::string cell;
  if (!domain->nonperiodic)
    cell = fmt::format("Lattice=\"{} 0 0 {} {} 0 {} {} {}\" ", domain->xprd, domain->xy,
                       domain->yprd, domain->xz, domain->yz, domain->zprd);
  fprintf(out, "%sProperties=species:S:1:pos:R:3 step=%ld pbc=\"%s %s %s\" reason=\"%s\"\n",
          cell.c_str(), (long) update->ntimestep, domain->xperiodic ? "T" : "F",
          domain->yperiodic ? "T" : "F", domain->zperiodic ? "T" : "F", reason.c_str());
  for (size_t n = 0; n < numbers.size(); n++)
    fprintf(out, "%s %.10f %.10f %.10f\n", MLFF::element_symbol(numbers[n]).c_str(),
            positions[3 * n], positions[3 * n + 1], positions[3 * n + 2]);
  fclose(out);
}

void FixMLFFMonitor::post_run()
{
  if (stopped_) timer->reset_timeout();    // later `run` commands may continue
  stopped_flag_ = stopped_;
}

double FixMLFFMonitor::compute_vector(int n)
{
  if (n == 0) return last_deviation_;
  if (n == 1) return last_ratio_;
  if (n == 2) return (double) flagged_;
  return (stopped_ || stopped_flag_) ? 1.0 : 0.0;
}
