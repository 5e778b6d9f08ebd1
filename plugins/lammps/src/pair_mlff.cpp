#include "pair_mlff.h"

#include "host_block_cache.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

using namespace LAMMPS_NS;

namespace {

// 1 kcal/mol in eV from the exact SI constants (N_A, e).
constexpr double KCAL_PER_MOL_IN_EV = 4184.0 / (6.02214076e23 * 1.602176634e-19);

// Standard atomic weights in g/mol (IUPAC 2016, as tabulated by ASE: the mass number of the
// longest-lived isotope for elements without a stable one), index = atomic number.
const double MASSES[] = {
    0.0, 1.008, 4.0026, 6.94, 9.01218, 10.81, 12.011, 14.007, 15.999, 18.9984, 20.1797, 22.9898,
    24.305, 26.9815, 28.085, 30.9738, 32.06, 35.45, 39.948, 39.0983, 40.078, 44.9559, 47.867,
    50.9415, 51.9961, 54.938, 55.845, 58.9332, 58.6934, 63.546, 65.38, 69.723, 72.63, 74.9216,
    78.971, 79.904, 83.798, 85.4678, 87.62, 88.9058, 91.224, 92.9064, 95.95, 97.9072, 101.07,
    102.906, 106.42, 107.868, 112.414, 114.818, 118.71, 121.76, 127.6, 126.904, 131.293, 132.905,
    137.327, 138.905, 140.116, 140.908, 144.242, 144.913, 150.36, 151.964, 157.25, 158.925, 162.5,
    164.93, 167.259, 168.934, 173.054, 174.967, 178.49, 180.948, 183.84, 186.207, 190.23, 192.217,
    195.084, 196.967, 200.592, 204.38, 207.2, 208.98, 208.982, 209.987, 222.018, 223.02, 226.025,
    227.028, 232.038, 231.036, 238.029, 237.048, 244.064, 243.061, 247.07, 247.07, 251.08, 252.083,
    257.095, 258.098, 259.101, 262.11, 267.122, 268.126, 271.134, 270.133, 269.134, 278.156,
    281.165, 281.166, 285.177, 286.182, 289.19, 289.194, 293.204, 293.208, 294.214};
constexpr int NUM_MASSES = sizeof(MASSES) / sizeof(MASSES[0]);

// g/mol: a type whose mass is further than this from its element's gets a warning
constexpr double MASS_TOLERANCE = 0.5;

}    // namespace

PairMLFF::PairMLFF(LAMMPS *lmp) : Pair(lmp)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  centroidstressflag = CENTROID_NOTAVAIL;
  MLFF::acquire_host_block_cache();
}

PairMLFF::~PairMLFF()
{
  MLFF::release_host_block_cache();
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

void PairMLFF::allocate()
{
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
}

/* pair_style mlff [device cpu|cuda] [dtype float32|float64] [halo auto|yes|no] */

void PairMLFF::settings(int narg, char **arg)
{
  int iarg = 0;
  while (iarg < narg) {
    if (iarg + 1 >= narg)
      error->all(FLERR, "Pair style mlff: keyword {} needs a value", arg[iarg]);
    std::string key = arg[iarg], value = arg[iarg + 1];
    if (key == "device") {
      if (value != "cpu" && value != "cuda")
        error->all(FLERR, "Pair style mlff: device must be cpu or cuda, not {}", value);
      device_name_ = value;
    } else if (key == "dtype") {
      if (value != "float32" && value != "float64")
        error->all(FLERR, "Pair style mlff: dtype must be float32 or float64, not {}", value);
      dtype_name_ = value;
    } else if (key == "halo") {
      if (value != "auto" && value != "yes" && value != "no")
        error->all(FLERR, "Pair style mlff: halo must be auto, yes or no, not {}", value);
      halo_setting_ = value;
    } else {
      error->all(FLERR, "Pair style mlff: unknown keyword {} (expected device, dtype or halo)",
                 key);
    }
    iarg += 2;
  }
  if (device_name_ == "cuda") {
    if (!torch::cuda::is_available())
      error->all(FLERR, "Pair style mlff: device cuda requested but torch sees no CUDA device");
    // one device per rank, by the rank's index among the ranks of its node
    MPI_Comm node;
    MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    int local_rank = 0;
    MPI_Comm_rank(node, &local_rank);
    MPI_Comm_free(&node);
    device_ = torch::Device(torch::kCUDA, local_rank % (int) torch::cuda::device_count());
  } else {
    device_ = torch::Device(torch::kCPU);
  }
}

/* pair_coeff * * model.pt E1 E2 ... (one element or NULL per atom type) */

void PairMLFF::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg != 3 + ntypes)
    error->all(FLERR,
               "Pair coeff for mlff: expected * * <model file> and {} element(s), one per atom "
               "type, got {} element(s)",
               ntypes, narg - 3);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "Pair coeff for mlff must start with * * (one call covers all types)");

  try {
    model_ = std::make_unique<MLFF::ModelFile>(MLFF::load_model_file(arg[2], device_));
    if (!dtype_name_.empty()) MLFF::convert_floating_point(model_->module,
                                                           MLFF::parse_dtype(dtype_name_));
  } catch (const std::exception &e) {
    error->all(FLERR, "Pair style mlff: {}", MLFF::first_line(e.what()));
  }
  // Each rank sums the energies of its own atoms, and a periodic box is seen through ghost
  // atoms: LAMMPS always needs the per-atom energies of local atoms (forward_graph).
  if (!model_->per_atom_energies)
    error->all(FLERR,
               "Pair style mlff: model {} gives no per-atom energies (mlff.json: "
               "per_atom_energies false), which LAMMPS needs for the energies of each rank's "
               "local atoms: it was imported from a TorchScript module without a scripted "
               "atomic_energies(positions, atomic_numbers, cell, pbc) -> [N] eV method; add it "
               "and run mlff import --from torchscript again (OpenMM and ASE run the file as "
               "it is)",
               model_->path);

  type_z_.assign(ntypes + 1, 0);
  for (int t = 1; t <= ntypes; t++) {
    std::string symbol = arg[2 + t];
    if (symbol == "NULL") continue;
    int z = MLFF::atomic_number(symbol);
    if (z < 0)
      error->all(FLERR, "Pair coeff for mlff: unknown element symbol {} for atom type {}",
                 symbol, t);
    bool known = false;
    for (int s : model_->species) known = known || (s == z);
    if (!known) {
      std::string knows;
      for (int s : model_->species) knows += " " + MLFF::element_symbol(s);
      error->all(FLERR,
                 "Pair coeff for mlff: atom type {} is {}, which model {} does not know (it "
                 "knows{})",
                 t, symbol, model_->path, knows);
    }
    type_z_[t] = z;
  }
  mass_checked_.assign(ntypes + 1, 0);
  int count = 0;
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) {
      setflag[i][j] = (type_z_[i] > 0 && type_z_[j] > 0) ? 1 : 0;
      count += setflag[i][j];
    }
  if (count == 0) error->all(FLERR, "Pair coeff for mlff: every atom type is NULL");
}

void PairMLFF::init_style()
{
  if (!model_) error->all(FLERR, "Pair style mlff: pair_coeff * * <model file> ... is missing");
  if (halo_setting_ == "yes" && model_->halo_widths.empty())
    error->all(FLERR,
               "Pair style mlff: halo yes, but model {} cannot run one layer at a time (its "
               "mlff.json has no \"halo\": MACE, NequIP and imported TorchScript models run "
               "whole, with ghosts to cutoff x layers); use halo auto or no",
               model_->path);
  halo_ = halo_setting_ != "no" && !model_->halo_widths.empty();
  if (!halo_mode() && force->newton_pair == 0)
    error->all(FLERR,
               "Pair style mlff requires newton pair on for model {} (it runs whole: ghost-atom "
               "forces are sent back to their owners by LAMMPS)",
               model_->path);
  const std::string units = update->unit_style;
  if (units == "metal")
    energy_factor_ = 1.0;
  else if (units == "real")
    energy_factor_ = 1.0 / KCAL_PER_MOL_IN_EV;
  else
    error->all(FLERR, "Pair style mlff supports units metal and real, not {}", units);

  if (model_->periodic_known && model_->periodic && !domain->xperiodic && !domain->yperiodic &&
      !domain->zperiodic)
    error->all(FLERR,
               "Pair style mlff: model {} was trained on periodic cells, but this box is not "
               "periodic in any direction; use boundary p (or a model trained on molecules)",
               model_->path);

  check_masses();

  if (halo_mode()) {
    // Ghosts to cutoff + skin (LAMMPS' default); features travel before each layer, and
    // under newton off the forces and per-atom virials of ghosts too (3 + 6 per atom).
    neighbor->add_request(this, NeighConst::REQ_FULL);
    int widest = 9;
    for (int width : model_->halo_widths) widest = std::max(widest, width);
    comm_forward = comm_reverse = comm_reverse_off = widest;
    if (comm->me == 0)
      utils::logmesg(lmp, "pair mlff: halo exchange ({} layers, up to {} values per ghost "
                          "atom and layer)\n", model_->num_interactions, widest);
    return;
  }
  comm_forward = comm_reverse = comm_reverse_off = 0;
  neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);

  // Message passing over num_interactions layers needs every atom within
  // cutoff x num_interactions of a local atom (plus the skin) as a ghost.
  const double needed = model_->cutoff * model_->num_interactions + neighbor->skin;
  if (comm->cutghostuser < needed) comm->cutghostuser = needed;
  if (comm->me == 0 && !model_->halo_widths.empty())
    utils::logmesg(lmp, "pair mlff: whole model per rank (halo no): ghosts to {:g} Angstrom\n",
                   needed);
  else if (comm->me == 0 && model_->num_interactions > 1)
    utils::logmesg(lmp, "pair mlff: model {} runs whole (no halo methods in its file): ghosts "
                        "to cutoff x layers + skin = {:g} Angstrom\n", model_->path, needed);
}

/* A type whose mass (g/mol in units metal and real) is far from the standard mass of the element
   pair_coeff maps it to is most likely a wrong element order in pair_coeff: the run would go on
   with the wrong elements and blow up. Warned once per type and pair_coeff, on rank 0; per-atom
   masses (atom styles with rmass) are not checked. */

void PairMLFF::check_masses()
{
  if (atom->rmass_flag || !atom->mass || !atom->mass_setflag) return;
  for (int t = 1; t <= atom->ntypes; t++) {
    const int z = type_z_[t];
    if (z <= 0 || z >= NUM_MASSES || mass_checked_[t] || !atom->mass_setflag[t]) continue;
    mass_checked_[t] = 1;
    if (comm->me == 0 && std::fabs(atom->mass[t] - MASSES[z]) > MASS_TOLERANCE)
      error->warning(FLERR,
                     "pair mlff: type {} has mass {:g} but pair_coeff maps it to {} ({:g}): "
                     "check the element order in pair_coeff (or ignore this if the mass was "
                     "changed on purpose)",
                     t, atom->mass[t], MLFF::element_symbol(z), MASSES[z]);
  }
}

double PairMLFF::init_one(int, int)
{
  return model_->cutoff;
}

/* A model trained on molecules ("periodic": false) must never see a periodic image: its atoms
   (unwrapped with their image flags, i.e. made whole) must stay at least one cutoff away from
   every periodic image of themselves. In fractional coordinates s along a periodic direction
   k, any image is at least (1 - span_k) * spacing_k away, spacing_k being the distance between
   lattice planes; the same rule as mlff_core.export.periodicity.check_isolated. */

void PairMLFF::check_isolated()
{
  const double *h_inv = domain->h_inv, *lo = domain->boxlo;
  double low[3], high[3];
  for (int k = 0; k < 3; k++) {
    low[k] = std::numeric_limits<double>::infinity();
    high[k] = -std::numeric_limits<double>::infinity();
  }
  for (int i = 0; i < atom->nlocal; i++) {
    if (type_z_[atom->type[i]] <= 0) continue;
    double x[3] = {atom->x[i][0], atom->x[i][1], atom->x[i][2]};
    domain->unmap(x, atom->image[i]);
    const double d[3] = {x[0] - lo[0], x[1] - lo[1], x[2] - lo[2]};
    const double s[3] = {h_inv[0] * d[0] + h_inv[5] * d[1] + h_inv[4] * d[2],
                         h_inv[1] * d[1] + h_inv[3] * d[2], h_inv[2] * d[2]};
    for (int k = 0; k < 3; k++) {
      low[k] = std::min(low[k], s[k]);
      high[k] = std::max(high[k], s[k]);
    }
  }
  double mine[6] = {low[0], low[1], low[2], -high[0], -high[1], -high[2]}, all[6];
  MPI_Allreduce(mine, all, 6, MPI_DOUBLE, MPI_MIN, world);
  const int periodic[3] = {domain->xperiodic, domain->yperiodic, domain->zperiodic};
  const double rows[3][3] = {{h_inv[0], h_inv[5], h_inv[4]}, {0.0, h_inv[1], h_inv[3]},
                             {0.0, 0.0, h_inv[2]}};
  for (int k = 0; k < 3; k++) {
    if (!periodic[k] || !std::isfinite(all[k])) continue;
    const double spacing = 1.0 / std::sqrt(rows[k][0] * rows[k][0] + rows[k][1] * rows[k][1] +
                                           rows[k][2] * rows[k][2]);
    const double span = -all[3 + k] - all[k];
    const double gap = (1.0 - span) * spacing;
    if (!(gap >= model_->cutoff))
      error->all(FLERR,
                 "Pair style mlff: model {} was trained on molecules, but its atoms come within "
                 "{:.2f} Angstrom of their own periodic images along {} (cutoff {} Angstrom): "
                 "they span {:.2f} of {:.2f} Angstrom. Use a box at least one cutoff wider than "
                 "the molecule, or a model trained on periodic cells",
                 model_->path, gap, "abc"[k], model_->cutoff, span * spacing, spacing);
  }
}

void PairMLFF::compute(int eflag, int vflag)
{
  if (halo_mode())
    compute_halo(eflag, vflag);
  else
    compute_whole(eflag, vflag);
}

void PairMLFF::compute_whole(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (vflag_atom)
    error->all(FLERR,
               "Pair style mlff: per-atom virials need the halo mode, which model {} {}",
               model_->path,
               model_->halo_widths.empty() ? "lacks (it runs whole)" : "has (remove halo no)");
  if (model_->periodic_known && !model_->periodic) check_isolated();

  double **x = atom->x;
  double **f = atom->f;
  const int *type = atom->type;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const double cutsq_model = model_->cutoff * model_->cutoff;

  // Graph nodes: local ML atoms first, then ghost ML atoms (NULL types are left out).
  std::vector<int> node_of(nall, -1), atom_of;
  atom_of.reserve(nall);
  for (int i = 0; i < nall; i++)
    if (type_z_[type[i]] > 0) {
      node_of[i] = (int) atom_of.size();
      atom_of.push_back(i);
    }
  int n_local_nodes = 0;
  for (int i = 0; i < nlocal; i++) n_local_nodes += (node_of[i] >= 0);
  const int n_nodes = (int) atom_of.size();

  // Edges (receiver <- sender) from the full neighbour lists of local and ghost atoms.
  std::vector<int64_t> receivers, senders;
  const int nlist = list->inum + list->gnum;
  for (int ii = 0; ii < nlist; ii++) {
    const int i = list->ilist[ii];
    if (node_of[i] < 0) continue;
    const int *jlist = list->firstneigh[i];
    for (int jj = 0; jj < list->numneigh[i]; jj++) {
      const int j = jlist[jj] & NEIGHMASK;
      if (node_of[j] < 0) continue;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      if (dx * dx + dy * dy + dz * dz < cutsq_model) {
        receivers.push_back(node_of[i]);
        senders.push_back(node_of[j]);
      }
    }
  }

  auto cpu64 = torch::TensorOptions().dtype(torch::kFloat64);
  torch::Tensor positions = torch::empty({n_nodes, 3}, cpu64);
  torch::Tensor numbers = torch::empty({n_nodes}, torch::TensorOptions().dtype(torch::kInt64));
  auto pos = positions.accessor<double, 2>();
  auto num = numbers.accessor<int64_t, 1>();
  for (int n = 0; n < n_nodes; n++) {
    const int i = atom_of[n];
    for (int k = 0; k < 3; k++) pos[n][k] = x[i][k];
    num[n] = type_z_[type[i]];
  }
  const int64_t n_edges = (int64_t) receivers.size();
  torch::Tensor edges = torch::empty({2, n_edges}, torch::TensorOptions().dtype(torch::kInt64));
  if (n_edges > 0) {
    std::memcpy(edges[0].data_ptr<int64_t>(), receivers.data(), n_edges * sizeof(int64_t));
    std::memcpy(edges[1].data_ptr<int64_t>(), senders.data(), n_edges * sizeof(int64_t));
  }

  torch::Tensor gradient, atomic;
  try {
    torch::Tensor input = positions.to(device_).requires_grad_(true);
    std::vector<torch::jit::IValue> args{input, numbers.to(device_), edges.to(device_),
                                         torch::tensor((int64_t) n_local_nodes)};
    atomic = model_->module.get_method("forward_graph")(args).toTensor();
    torch::Tensor total = atomic.sum();
    gradient = torch::autograd::grad({total}, {input})[0].to(torch::kCPU, torch::kFloat64);
    atomic = atomic.detach().to(torch::kCPU, torch::kFloat64);
  } catch (const c10::Error &e) {
    error->one(FLERR, "Pair style mlff: model evaluation failed: {}",
               MLFF::first_line(e.what_without_backtrace()));
  }

  // Forces on local and ghost atoms (reverse communication sums the ghost parts).
  auto grad = gradient.accessor<double, 2>();
  for (int n = 0; n < n_nodes; n++) {
    const int i = atom_of[n];
    for (int k = 0; k < 3; k++) f[i][k] -= energy_factor_ * grad[n][k];
  }
  tally_energies(atomic, atom_of, n_local_nodes);

  if (vflag_fdotr) virial_fdotr_compute();
}

void PairMLFF::tally_energies(const torch::Tensor &atomic, const std::vector<int> &atom_of,
                              int n_local)
{
  auto energies = atomic.accessor<double, 1>();
  if (eflag_global) {
    double sum = 0.0;
    for (int n = 0; n < n_local; n++) sum += energies[n];
    eng_vdwl += energy_factor_ * sum;
  }
  if (eflag_atom)
    for (int n = 0; n < n_local; n++) eatom[atom_of[n]] += energy_factor_ * energies[n];
}
