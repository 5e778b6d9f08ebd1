#include "fix_mlff_monitor.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "group.h"
#include "pair_mlff.h"
#include "timer.h"
#include "update.h"
#include "utils.h"

#include <algorithm>
#include <cstdio>
#include <array>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>

using namespace LAMMPS_NS;
using namespace FixConst;

namespace {

// Angstrom: atoms are bonded when closer than r_i + r_j + BOND_SKIN (mlff_core BOND_SKIN)
constexpr double BOND_SKIN = 0.3;

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

std::string fixed3(double value)
{
  return fmt::format("{:.3f}", value);
}

}    // namespace

FixMLFFMonitor::FixMLFFMonitor(LAMMPS *lmp, int narg, char **arg) : Fix(lmp, narg, arg)
{
  if (narg < 5)
    error->all(FLERR, "Fix mlff/monitor: usage: fix ID group mlff/monitor N model.pt "
                      "[threshold X] [explore yes|no] [stop yes|no] [stop_unexplored yes|no] "
                      "[warn_ratio W] [stop_ratio S] [warn_deviation W] [stop_deviation S] [file F] "
                      "[frames F] [last_good F] [elements E1 E2 ...]");
  check_every_ = utils::inumeric(FLERR, arg[3], false, lmp);
  if (check_every_ <= 0)
    error->all(FLERR, "Fix mlff/monitor: N must be a positive number of steps, not {}", arg[3]);
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
        if (symbol == "NULL") continue;
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
      if (!(threshold_ > 0.0))
        error->all(FLERR, "Fix mlff/monitor: threshold must be a positive length, not {}",
                   value);
    } else if (key == "explore") {
      explore_ = yes_no(error, key, value);
    } else if (key == "stop") {
      stop_ = yes_no(error, key, value);
    } else if (key == "stop_unexplored") {
      stop_unexplored_ = yes_no(error, key, value);
    } else if (key == "warn_ratio") {
      warn_ratio_ = utils::numeric(FLERR, value, false, lmp);
    } else if (key == "stop_ratio") {
      stop_ratio_ = utils::numeric(FLERR, value, false, lmp);
    } else if (key == "warn_deviation") {
      warn_deviation_ = utils::numeric(FLERR, value, false, lmp);
      if (!(std::isfinite(warn_deviation_) && warn_deviation_ > 0.0))
        error->all(FLERR, "Fix mlff/monitor: warn_deviation must be a positive number, got {}",
                   value);
    } else if (key == "stop_deviation") {
      stop_deviation_ = utils::numeric(FLERR, value, false, lmp);
    } else if (key == "file") {
      file_path_ = value;
    } else if (key == "frames") {
      frames_path_ = value;
    } else if (key == "last_good") {
      last_good_path_ = value;
    } else {
      error->all(FLERR, "Fix mlff/monitor: unknown keyword {}", key);
    }
    iarg += 2;
  }

  // the levels of mlff_core.monitors.detectors.ratio_levels, with its words
  if (!(std::isfinite(warn_ratio_) && warn_ratio_ > 0.0))
    error->all(FLERR, "Fix mlff/monitor: warn_ratio must be a positive number, got {}",
               warn_ratio_);
  if (std::isnan(stop_ratio_)) stop_ratio_ = warn_ratio_;
  if (!(std::isfinite(stop_ratio_) && stop_ratio_ >= warn_ratio_))
    error->all(FLERR, "Fix mlff/monitor: stop_ratio ({}) must be at least warn_ratio ({})",
               stop_ratio_, warn_ratio_);

  // the levels of mlff_core.monitors.detectors.trust_levels for the committee deviation
  if (!std::isnan(stop_deviation_)) {
    if (std::isnan(warn_deviation_))
      error->all(FLERR, "Fix mlff/monitor: stop_deviation needs warn_deviation");
    if (!(std::isfinite(stop_deviation_) && stop_deviation_ >= warn_deviation_))
      error->all(FLERR, "Fix mlff/monitor: stop_deviation ({}) must be at least warn_deviation "
                        "({})", stop_deviation_, warn_deviation_);
  }

  nevery = 1;    // end_of_step every step: finiteness; the full check every check_every_ steps
  vector_flag = 1;
  size_vector = 8;
  global_freq = check_every_;
  extvector = 0;

  if (comm->me == 0) {
    try {
      model_ = std::make_unique<MLFF::ModelFile>(
          MLFF::load_model_file(model_path_, torch::Device(torch::kCPU)));
    } catch (const std::exception &e) {
      error->one(FLERR, "Fix mlff/monitor: {}", e.what());
    }
    molecule_ = !(model_->periodic_known && model_->periodic);
    if (!std::isnan(warn_deviation_) && model_->committee_size < 2)
      error->one(FLERR, "Fix mlff/monitor: {}: not a committee model file, so it has no force "
                        "deviation to monitor (train one with mlff train --committee M)",
                 model_path_);
    if (!file_path_.empty()) {
      fp_ = fopen(file_path_.c_str(), "w");
      if (!fp_) error->one(FLERR, "Fix mlff/monitor: cannot open file {}", file_path_);
      fprintf(fp_, "# step\tstatus\tdetails\n");
      fflush(fp_);
    }
    if (!frames_path_.empty()) {
      frames_ = fopen(frames_path_.c_str(), "w");    // frames are appended during the run
      if (!frames_)
        error->one(FLERR, "Fix mlff/monitor: cannot open frames file {}", frames_path_);
      setvbuf(frames_, nullptr, _IONBF, 0);    // one write() per frame: no partial frame
    }
  }
}

FixMLFFMonitor::~FixMLFFMonitor()
{
  if (fp_) fclose(fp_);
  if (frames_) fclose(frames_);
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
  // every atom of the group needs an element; types outside the group may be NULL
  int missing = 0;
  for (int i = 0; i < atom->nlocal; i++)
    if ((atom->mask[i] & groupbit) && type_z_[atom->type[i]] <= 0)
      missing = std::max(missing, atom->type[i]);
  int worst = 0;
  MPI_Allreduce(&missing, &worst, 1, MPI_INT, MPI_MAX, world);
  if (worst > 0)
    error->all(FLERR,
               "Fix mlff/monitor: atom type {} is in group {} but has no element (NULL in "
               "pair_coeff); give the fix a group of ML atoms only, or elements E1 E2 ...",
               worst, group->names[igroup]);
  if (group->count(igroup) > std::numeric_limits<int>::max() / 5)
    error->all(FLERR, "Fix mlff/monitor: too many atoms to gather");
}

void FixMLFFMonitor::gather(std::vector<double> &positions, std::vector<int> &numbers)
{
  const int nlocal = atom->nlocal;
  std::vector<double> mine;
  mine.reserve(5 * nlocal);
  for (int i = 0; i < nlocal; i++) {
    if (!(atom->mask[i] & groupbit)) continue;
    double x[3] = {atom->x[i][0], atom->x[i][1], atom->x[i][2]};
    if (std::isfinite(x[0]) && std::isfinite(x[1]) && std::isfinite(x[2]))
      domain->unmap(x, atom->image[i]);
    mine.insert(mine.end(), {(double) atom->tag[i], x[0], x[1], x[2],
                             (double) type_z_[atom->type[i]]});
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

long FixMLFFMonitor::first_non_finite(int &what) const
{
  // lowest atom ID with a non-finite position, then (if none) with a non-finite force
  long local[2] = {std::numeric_limits<long>::max(), std::numeric_limits<long>::max()};
  for (int i = 0; i < atom->nlocal; i++) {
    if (!(atom->mask[i] & groupbit)) continue;
    const double *x = atom->x[i], *f = atom->f[i];
    if (!(std::isfinite(x[0]) && std::isfinite(x[1]) && std::isfinite(x[2])))
      local[0] = std::min(local[0], (long) atom->tag[i]);
    else if (!(std::isfinite(f[0]) && std::isfinite(f[1]) && std::isfinite(f[2])))
      local[1] = std::min(local[1], (long) atom->tag[i]);
  }
  long global[2];
  MPI_Allreduce(local, global, 2, MPI_LONG, MPI_MIN, world);
  for (int k = 0; k < 2; k++)
    if (global[k] != std::numeric_limits<long>::max()) {
      what = k;
      return global[k];
    }
  what = -1;
  return -1;
}

double FixMLFFMonitor::bond_length(const std::vector<double> &positions, int a, int b) const
{
  double d[3];
  for (int k = 0; k < 3; k++) d[k] = positions[3 * b + k] - positions[3 * a + k];
  domain->minimum_image(FLERR, d);
  return std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
}

void FixMLFFMonitor::make_whole(std::vector<double> &positions) const
{
  for (const auto &[child, parent] : tree_) {
    double d[3];
    for (int k = 0; k < 3; k++) d[k] = positions[3 * child + k] - positions[3 * parent + k];
    domain->minimum_image(FLERR, d);
    for (int k = 0; k < 3; k++) positions[3 * child + k] = positions[3 * parent + k] + d[k];
  }
}

void FixMLFFMonitor::find_bonds(const std::vector<double> &positions,
                                const std::vector<int> &numbers)
{
  // Topology from the data file when there is one: bonds with both atoms in the group.
  std::vector<int> mine;
  if (atom->molecular == Atom::MOLECULAR && atom->num_bond)
    for (int i = 0; i < atom->nlocal; i++)
      for (int m = 0; m < atom->num_bond[i]; m++) {
        mine.push_back((int) atom->tag[i]);
        mine.push_back((int) atom->bond_atom[i][m]);
      }
  std::vector<int> all = gather_to_root(world, comm->me, comm->nprocs, mine, MPI_INT);
  if (comm->me != 0) return;
  std::set<std::pair<int, int>> topology;
  for (size_t k = 0; k + 1 < all.size(); k += 2) {
    // atom IDs -> positions in the ID-ordered arrays (IDs need not be contiguous)
    auto index = [&](long tag) {
      auto at = std::lower_bound(tags_.begin(), tags_.end(), tag);
      return (at != tags_.end() && *at == tag) ? (int) (at - tags_.begin()) : -1;
    };
    const int a = index(all[k]), b = index(all[k + 1]);
    if (a >= 0 && b >= 0) topology.insert({std::min(a, b), std::max(a, b)});
  }
  bonds_.assign(topology.begin(), topology.end());
  const int natoms = (int) numbers.size();
  if (bonds_.empty()) {
    // Covalent radii + BOND_SKIN, minimum image. Small systems: every pair; large ones:
    // a periodic grid of >= 4 Angstrom cells on wrapped coordinates.
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

  // breadth-first spanning forest (lowest index first), as mlff_core's bond_tree_levels
  std::vector<std::vector<int>> neighbours(natoms);
  for (const auto &[a, b] : bonds_) {
    neighbours[a].push_back(b);
    neighbours[b].push_back(a);
  }
  std::vector<char> seen(natoms, 0);
  tree_.clear();
  for (int root = 0; root < natoms; root++) {
    if (seen[root]) continue;
    seen[root] = 1;
    std::vector<int> frontier{root};
    while (!frontier.empty()) {
      std::vector<int> following;
      for (int parent : frontier)
        for (int child : neighbours[parent])
          if (!seen[child]) {
            seen[child] = 1;
            following.push_back(child);
            tree_.emplace_back(child, parent);
          }
      frontier.swap(following);
    }
  }
}

void FixMLFFMonitor::setup(int)
{
  // Reference bond lengths come from the first run's starting frame; later `run` commands
  // (e.g. a long run in chunks) keep them. A new run checks its starting frame again (the
  // deck may have moved atoms in between).
  stopped_ = false;
  stopped_by_ = 0;
  stop_step_ = -1;
  int what = -1;
  const long bad = first_non_finite(what);
  check(!have_reference_, bad, what);
  have_reference_ = true;
}

void FixMLFFMonitor::end_of_step()
{
  int what = -1;
  const long bad = first_non_finite(what);
  if (update->ntimestep == last_checked_step_) return;    // rerun: setup checked this frame
  if (bad >= 0 || update->ntimestep % check_every_ == 0) check(false, bad, what);
}

std::array<torch::Tensor, 4> FixMLFFMonitor::frame_tensors(std::vector<double> &positions,
                                                          const std::vector<int> &numbers) const
{
  const int64_t natoms = (int64_t) numbers.size();
  auto pos = torch::from_blob(positions.data(), {natoms, 3}, torch::kFloat64).clone();
  std::vector<int64_t> z(numbers.begin(), numbers.end());
  auto zt = torch::from_blob(z.data(), {natoms}, torch::kInt64).clone();
  auto cell = torch::zeros({3, 3}, torch::kFloat64);
  auto pbc = torch::zeros({3}, torch::kBool);
  if (!molecule_) {
    cell[0][0] = domain->xprd;
    cell[1][0] = domain->xy;
    cell[1][1] = domain->yprd;
    cell[2][0] = domain->xz;
    cell[2][1] = domain->yz;
    cell[2][2] = domain->zprd;
    pbc = torch::tensor({(bool) domain->xperiodic, (bool) domain->yperiodic,
                         (bool) domain->zperiodic});
  }
  return {pos, zt, cell, pbc};
}

double FixMLFFMonitor::force_deviation(std::vector<double> &positions,
                                       const std::vector<int> &numbers, int &atom)
{
  // mlff_core.monitors.force_deviation: sqrt of the members' mean squared distance from
  // their mean force, per atom; the largest of them
  auto inputs = frame_tensors(positions, numbers);
  torch::Tensor forces;
  try {
    forces = model_->module.get_method("committee_forces")({inputs[0], inputs[1], inputs[2],
                                                            inputs[3]})
                 .toTensor()
                 .to(torch::kFloat64);
  } catch (const c10::Error &e) {
    error->one(FLERR, "Fix mlff/monitor: committee_forces() failed: {}",
               e.what_without_backtrace());
  }
  auto spread = forces - forces.mean(0, true);
  auto per_atom = spread.pow(2).sum(2).mean(0).sqrt();
  atom = -1;
  if (!torch::isfinite(per_atom).all().item<bool>())
    return std::numeric_limits<double>::quiet_NaN();
  atom = (int) per_atom.argmax().item<int64_t>();
  return per_atom[atom].item<double>();
}

std::string FixMLFFMonitor::frame_text(const std::vector<double> &positions,
                                       const std::vector<int> &numbers, bigint step,
                                       const std::string &reason) const
{
  const bool periodic = !molecule_ && !(domain->xperiodic == 0 && domain->yperiodic == 0 &&
                                        domain->zperiodic == 0);
  std::string text = fmt::format("{}\n", numbers.size());
  if (periodic)
    text += fmt::format("Lattice=\"{} 0 0 {} {} 0 {} {} {}\" ", domain->xprd, domain->xy,
                        domain->yprd, domain->xz, domain->yz, domain->zprd);
  text += fmt::format("Properties=species:S:1:pos:R:3 step={} reason=\"{}\" pbc=\"{} {} {}\"\n",
                      step, reason, periodic && domain->xperiodic ? "T" : "F",
                      periodic && domain->yperiodic ? "T" : "F",
                      periodic && domain->zperiodic ? "T" : "F");
  for (size_t n = 0; n < numbers.size(); n++)
    text += fmt::format("{} {:.10f} {:.10f} {:.10f}\n", MLFF::element_symbol(numbers[n]),
                        positions[3 * n], positions[3 * n + 1], positions[3 * n + 2]);
  return text;
}

void FixMLFFMonitor::check(bool first, long bad_atom, int bad_what)
{
  std::vector<double> positions;
  std::vector<int> numbers;
  gather(positions, numbers);
  if (first) find_bonds(positions, numbers);
  last_checked_step_ = update->ntimestep;

  int stop = 0;
  if (comm->me == 0) {
    const bigint step = update->ntimestep;
    const bool finite = bad_atom < 0;
    const bool finite_positions = finite || bad_what != 0;
    if (finite_positions && molecule_) make_whole(positions);
    // collapse (same words as mlff_core.monitors.CollapseCheck.describe, atom IDs)
    bool collapsed = false;
    std::string collapse;
    if (!finite) {
      collapsed = true;
      last_deviation_ = std::numeric_limits<double>::infinity();
      collapse = fmt::format("atom {} has a non-finite {} (NaN or inf)", bad_atom,
                             bad_what == 0 ? "position" : "force");
    } else if (bonds_.empty()) {
      last_deviation_ = 0.0;
      collapse = "no bonds to watch";
    } else {
      double worst = -1.0;
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
      collapsed = worst > threshold_;
      const auto &b = bonds_[worst_bond];
      collapse = fmt::format("bond {}-{} is {} Å (reference {} Å, deviation {} Å)",
                             tags_[b.first], tags_[b.second],
                             fixed3(bond_length(positions, b.first, b.second)),
                             fixed3(reference_[worst_bond]), fixed3(worst));
    }
    // exploration (same words as mlff_core.monitors.ExplorationCheck.describe)
    last_ratio_ = std::numeric_limits<double>::quiet_NaN();
    last_bond_score_ = std::numeric_limits<double>::quiet_NaN();
    bool above_warn = false, above_stop = false;
    std::string exploration;
    if (explore_ && !finite_positions) {
      exploration = "not classified: non-finite positions or overlapping atoms";
    } else if (explore_) {
      auto inputs = frame_tensors(positions, numbers);
      torch::Tensor result;
      try {
        torch::NoGradGuard no_grad;
        if (!molecule_)
          result = model_->module.get_method("explore_periodic")(
              {inputs[0], inputs[1], inputs[2], inputs[3]}).toTensor();
        else
          result = model_->module.get_method("explore")({inputs[0], inputs[1]}).toTensor();
      } catch (const c10::Error &e) {
        error->one(FLERR, "Fix mlff/monitor: explore() failed: {}", e.what_without_backtrace());
      }
      const double cluster = result[0].item<double>(), ratio = result[1].item<double>();
      // files with the bond score: [cluster, ratio, bond score, atom i, atom j]; older: [2]
      const bool has_bond = result.numel() >= 5 && result[3].item<double>() >= 0.0;
      if (cluster >= 0.0 && !std::isfinite(ratio)) {    // e.g. overlapping atoms: 1/r = inf
        exploration = "not classified: non-finite positions or overlapping atoms";
      } else if (cluster >= 0.0) {
        last_ratio_ = ratio;
        double score = ratio;
        std::string bond;
        if (has_bond) {
          last_bond_score_ = result[2].item<double>();
          if (last_bond_score_ > score) score = last_bond_score_;
          bond = fmt::format(", bond {}-{} score {}", tags_[(int) result[3].item<double>()],
                             tags_[(int) result[4].item<double>()], fixed3(last_bond_score_));
        }
        above_warn = score > warn_ratio_;
        above_stop = score > stop_ratio_;
        exploration = fmt::format("{}: nearest cluster {}, distance/radius {}{}",
                                  score > 1.0 ? "unexplored" : "explored", (int) cluster,
                                  fixed3(ratio), bond);
      } else {
        exploration = "no reference clusters for this system in the model file";
      }
    }
    // committee deviation (same words as mlff_core.monitors.DeviationCheck.describe)
    const bool deviation_on = !std::isnan(warn_deviation_);
    bool deviating = false, deviation_stop = false;
    std::string deviation;
    last_force_deviation_ = std::numeric_limits<double>::quiet_NaN();
    if (deviation_on) {
      int atom = -1;
      const double value = finite_positions ? force_deviation(positions, numbers, atom)
                                            : std::numeric_limits<double>::quiet_NaN();
      if (std::isfinite(value)) {
        last_force_deviation_ = value;
        deviating = value > warn_deviation_;
        deviation_stop = !std::isnan(stop_deviation_) && value > stop_deviation_;
        deviation = fmt::format("force deviation {} eV/Å (atom {})", fixed3(value), tags_[atom]);
      } else {
        deviation = "not classified: non-finite positions or forces";
      }
    }
    if (fp_) {
      std::string lines = fmt::format("{}\t{}\tcollapse: {}\n", step,
                                      collapsed ? "FLAGGED" : "ok", collapse);
      if (explore_)
        lines += fmt::format("{}\t{}\texploration: {}\n", step, above_warn ? "FLAGGED" : "ok",
                             exploration);
      if (deviation_on)
        lines += fmt::format("{}\t{}\tdeviation: {}\n", step, deviating ? "FLAGGED" : "ok",
                             deviation);
      fputs(lines.c_str(), fp_);
      fflush(fp_);
    }
    std::vector<std::string> reasons;
    if (collapsed) reasons.push_back("collapse: " + collapse);
    if (above_warn) reasons.push_back("exploration: " + exploration);
    if (deviating) reasons.push_back("deviation: " + deviation);
    // what acts, in the order collapse, exploration, deviation
    int acting = 0;
    if (stop_ && collapsed) acting = 1;
    else if (stop_unexplored_ && above_stop) acting = 2;
    else if (deviation_stop) acting = 3;
    const bool stopping = acting > 0;
    if (!reasons.empty()) {
      flagged_++;
      if (frames_) {
        std::string reason = reasons[0];
        for (size_t k = 1; k < reasons.size(); k++) reason += "; " + reasons[k];
        const std::string text = frame_text(positions, numbers, step, reason);
        fwrite(text.data(), 1, text.size(), frames_);    // unbuffered: one write()
      }
    }
    if (stopping) {
      stop = acting;
      stop_step_ = step;
      const std::string why = acting == 1 ? "collapse: " + collapse
                              : acting == 2 ? "exploration: " + exploration
                                            : "deviation: " + deviation;
      utils::logmesg(lmp, "fix mlff/monitor: stopping the run at step {}: {}\n", step, why);
      if (!last_good_path_.empty() && !last_good_.empty()) {
        const std::string partial = last_good_path_ + ".partial";
        FILE *out = fopen(partial.c_str(), "w");
        if (!out || fputs(last_good_.c_str(), out) < 0 || fclose(out) != 0 ||
            std::rename(partial.c_str(), last_good_path_.c_str()) != 0)
          error->one(FLERR, "Fix mlff/monitor: cannot write last_good file {}",
                     last_good_path_);
      }
    } else if (!last_good_path_.empty() && finite_positions) {
      last_good_ = frame_text(positions, numbers, step, "last good frame");
    }
  }
  MPI_Bcast(&stop, 1, MPI_INT, 0, world);
  MPI_Bcast(&last_deviation_, 1, MPI_DOUBLE, 0, world);
  MPI_Bcast(&last_ratio_, 1, MPI_DOUBLE, 0, world);
  MPI_Bcast(&last_bond_score_, 1, MPI_DOUBLE, 0, world);
  MPI_Bcast(&last_force_deviation_, 1, MPI_DOUBLE, 0, world);
  MPI_Bcast(&flagged_, 1, MPI_INT, 0, world);
  if (stop) {
    stopped_ = true;
    stopped_by_ = stop;
    MPI_Bcast(&stop_step_, 1, MPI_LMP_BIGINT, 0, world);
    timer->force_timeout();    // the run loop ends after this step, as with fix halt
  }
}

void FixMLFFMonitor::post_run()
{
  if (stopped_) timer->reset_timeout();    // later `run` commands may continue
  stopped_flag_ = stopped_;
  stopped_by_last_ = stopped_by_;
}

double FixMLFFMonitor::compute_vector(int n)
{
  if (n == 0) return last_deviation_;
  if (n == 1) return last_ratio_;
  if (n == 2) return (double) flagged_;
  if (n == 3) return (stopped_ || stopped_flag_) ? 1.0 : 0.0;
  if (n == 4) return stopped_flag_ || stopped_ ? (double) stop_step_ : -1.0;
  if (n == 5) return last_force_deviation_;
  if (n == 6) return (double) (stopped_ ? stopped_by_ : stopped_by_last_);
  return last_bond_score_;
}
