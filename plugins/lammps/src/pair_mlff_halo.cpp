/* pair_style mlff, halo mode: ghosts one cutoff (+ skin) deep, node features exchanged between
   ranks before every interaction layer (LAMMPS forward communication) and their gradients
   summed back onto the owners in the backward pass (reverse communication). The model-file
   side of the contract is in mlff_core/models/halo.py.

   Per step:
     nodes   local ML atoms, then the ghost ML atoms that an edge reaches
     edges   (i <- j) from the full neighbour lists of local atoms only: every directed edge
             of the periodic graph belongs to exactly one rank (its receiver's)
     model   graph = halo_graph(Z, edges, r_ij, finite); state = halo_embed(graph);
             source = halo_source(0, state) on all nodes (layer-0 state is the species);
             for layer k >= 1: source = exchange(halo_source(k, state)) ; state =
             halo_interaction(k, state, source); energies = halo_readout(state)
     back    one autograd::grad of the summed energies w.r.t. the edge vectors g_e = dE/dr_e
             (the exchange's backward runs LAMMPS' reverse communication inside it)
     forces  f_i += g_e, f_j -= g_e; virial W = -sum_e r_e (x) g_e; per-atom virial half to
             each end of the edge. Newton off: ghost rows of forces and per-atom virials are
             sent to their owners here (3 + 6 values per atom).

   Every rank calls the same methods in the same order, with empty tensors where it has no
   atoms or edges, so every rank's backward pass runs every exchange (a skipped one would leave
   the other ranks waiting). */

#include "pair_mlff.h"

#include "host_block_cache.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "neigh_list.h"
#include "utils.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <cstring>

using namespace LAMMPS_NS;

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The exchange as an autograd op: forward fills ghost rows from their owners, backward sums
// the gradients of ghost rows onto their owners (on CPU, PyTorch runs the backward pass on
// the calling thread, so LAMMPS' MPI calls stay on the main thread).
struct HaloExchange : public torch::autograd::Function<HaloExchange> {
  static torch::Tensor forward(AutogradContext *ctx, torch::Tensor local, int64_t pair)
  {
    ctx->saved_data["pair"] = pair;
    return reinterpret_cast<PairMLFF *>(pair)->halo_forward(local);
  }

  static variable_list backward(AutogradContext *ctx, variable_list grads)
  {
    auto *pair = reinterpret_cast<PairMLFF *>(ctx->saved_data["pair"].toInt());
    return {pair->halo_reverse(grads[0]), torch::Tensor()};
  }
};

}    // namespace

void PairMLFF::setup()
{
  exchange_seconds_ = forward_seconds_ = backward_seconds_ = compute_seconds_ = 0.0;
}

void PairMLFF::finish()
{
  const MLFF::HostCacheStats cache = MLFF::host_block_cache_stats();
  if (comm->me == 0 && cache.requests > 0)
    utils::logmesg(lmp,
                   "pair mlff: host block cache: {} of {} tensors of 1 MiB or more reused a "
                   "block (since the pair style was created); peak {:.1f} MiB live, {:.1f} MiB "
                   "idle now\n",
                   cache.reused, cache.requests, cache.peak_live_bytes / 1048576.0,
                   cache.idle_bytes / 1048576.0);
  if (!halo_mode() || compute_seconds_ <= 0.0) return;
  double mine[4] = {exchange_seconds_, compute_seconds_, forward_seconds_, backward_seconds_};
  double all[4];
  MPI_Allreduce(mine, all, 4, MPI_DOUBLE, MPI_SUM, world);
  for (double &value : all) value /= comm->nprocs;
  if (comm->me == 0)
    utils::logmesg(lmp,
                   "pair mlff: halo exchange {:.3g} s of {:.3g} s in the pair style ({:.1f}%, "
                   "mean over ranks); model forward {:.3g} s, backward {:.3g} s (exchanges "
                   "included), graph and force assembly {:.3g} s\n",
                   all[0], all[1], 100.0 * all[0] / all[1], all[2], all[3],
                   all[1] - all[2] - all[3]);
}

torch::Tensor PairMLFF::halo_forward(const torch::Tensor &local)
{
  const double start = MPI_Wtime();
  const int width = (int) local.size(1);
  if (width > comm_forward)
    error->one(FLERR, "Pair style mlff: model {} sends {} values per atom, more than its "
                      "mlff.json's halo source_widths allow ({})", model_->path, width,
               comm_forward);
  const int nall = atom->nlocal + atom->nghost;
  comm_width_ = width;
  comm_buf_.assign((size_t) nall * width, 0.0);
  torch::Tensor host = local.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  const double *rows = host.data_ptr<double>();
  for (int n = 0; n < n_local_nodes_; n++)
    std::memcpy(comm_row(atom_of_[n]), rows + (size_t) n * width, width * sizeof(double));
  comm->forward_comm(this, width);
  const int n_ghost_nodes = (int) atom_of_.size() - n_local_nodes_;
  torch::Tensor ghosts = torch::empty({n_ghost_nodes, width}, torch::kFloat64);
  double *out = ghosts.data_ptr<double>();
  for (int g = 0; g < n_ghost_nodes; g++)
    std::memcpy(out + (size_t) g * width, comm_row(atom_of_[n_local_nodes_ + g]),
                width * sizeof(double));
  torch::Tensor nodes = torch::cat({local, ghosts.to(local.device(), local.scalar_type())});
  exchange_seconds_ += MPI_Wtime() - start;
  return nodes;
}

torch::Tensor PairMLFF::halo_reverse(const torch::Tensor &nodes)
{
  const double start = MPI_Wtime();
  const int width = (int) nodes.size(1);
  const int nall = atom->nlocal + atom->nghost;
  comm_width_ = width;
  comm_buf_.assign((size_t) nall * width, 0.0);
  torch::Tensor host = nodes.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  const double *rows = host.data_ptr<double>();
  for (size_t n = 0; n < atom_of_.size(); n++)
    std::memcpy(comm_row(atom_of_[n]), rows + n * width, width * sizeof(double));
  comm->reverse_comm(this, width);
  torch::Tensor local = torch::empty({n_local_nodes_, width}, torch::kFloat64);
  double *out = local.data_ptr<double>();
  for (int n = 0; n < n_local_nodes_; n++)
    std::memcpy(out + (size_t) n * width, comm_row(atom_of_[n]), width * sizeof(double));
  local = local.to(nodes.device(), nodes.scalar_type());
  exchange_seconds_ += MPI_Wtime() - start;
  return local;
}

int PairMLFF::pack_forward_comm(int n, int *list, double *buf, int, int *)
{
  // Features are invariant under the periodic shift of an image (vectors included: they are
  // differences), so the pbc flags are not needed.
  for (int k = 0; k < n; k++)
    std::memcpy(buf + (size_t) k * comm_width_, comm_row(list[k]), comm_width_ * sizeof(double));
  return n * comm_width_;
}

void PairMLFF::unpack_forward_comm(int n, int first, double *buf)
{
  std::memcpy(comm_row(first), buf, (size_t) n * comm_width_ * sizeof(double));
}

int PairMLFF::pack_reverse_comm(int n, int first, double *buf)
{
  std::memcpy(buf, comm_row(first), (size_t) n * comm_width_ * sizeof(double));
  return n * comm_width_;
}

void PairMLFF::unpack_reverse_comm(int n, int *list, double *buf)
{
  for (int k = 0; k < n; k++) {
    double *row = comm_row(list[k]);
    for (int c = 0; c < comm_width_; c++) row[c] += buf[(size_t) k * comm_width_ + c];
  }
}

void PairMLFF::compute_halo(int eflag, int vflag)
{
  const double start = MPI_Wtime();
  ev_init(eflag, vflag);
  if (model_->periodic_known && !model_->periodic) check_isolated();

  double **x = atom->x;
  double **f = atom->f;
  const int *type = atom->type;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const double cutsq_model = model_->cutoff * model_->cutoff;

  // Nodes: local ML atoms, then ghost ML atoms as edges reach them.
  std::vector<int> node_of(nall, -1);
  atom_of_.clear();
  for (int i = 0; i < nlocal; i++)
    if (type_z_[type[i]] > 0) {
      node_of[i] = (int) atom_of_.size();
      atom_of_.push_back(i);
    }
  n_local_nodes_ = (int) atom_of_.size();
  std::vector<int64_t> receivers, senders;
  std::vector<double> vectors;
  for (int ii = 0; ii < list->inum; ii++) {
    const int i = list->ilist[ii];
    if (node_of[i] < 0) continue;
    const int *jlist = list->firstneigh[i];
    for (int jj = 0; jj < list->numneigh[i]; jj++) {
      const int j = jlist[jj] & NEIGHMASK;
      if (type_z_[type[j]] <= 0) continue;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      if (!(dx * dx + dy * dy + dz * dz < cutsq_model)) continue;
      if (node_of[j] < 0) {
        node_of[j] = (int) atom_of_.size();
        atom_of_.push_back(j);
      }
      receivers.push_back(node_of[i]);
      senders.push_back(node_of[j]);
      vectors.insert(vectors.end(), {dx, dy, dz});
    }
  }
  const int n_nodes = (int) atom_of_.size();
  const int64_t n_edges = (int64_t) receivers.size();

  auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  torch::Tensor numbers = torch::empty({n_nodes}, i64);
  auto num = numbers.accessor<int64_t, 1>();
  for (int n = 0; n < n_nodes; n++) num[n] = type_z_[type[atom_of_[n]]];
  torch::Tensor finite = torch::empty({n_local_nodes_}, torch::kBool);
  auto fin = finite.accessor<bool, 1>();
  for (int n = 0; n < n_local_nodes_; n++) {
    const double *xi = x[atom_of_[n]];
    fin[n] = std::isfinite(xi[0]) && std::isfinite(xi[1]) && std::isfinite(xi[2]);
  }
  torch::Tensor edges = torch::empty({2, n_edges}, i64);
  torch::Tensor edge_vectors = torch::empty({n_edges, 3}, torch::kFloat64);
  if (n_edges > 0) {
    std::memcpy(edges[0].data_ptr<int64_t>(), receivers.data(), n_edges * sizeof(int64_t));
    std::memcpy(edges[1].data_ptr<int64_t>(), senders.data(), n_edges * sizeof(int64_t));
    std::memcpy(edge_vectors.data_ptr<double>(), vectors.data(), n_edges * 3 * sizeof(double));
  }

  torch::Tensor gradient, atomic;
  try {
    const double forward_start = MPI_Wtime();
    torch::jit::script::Module &module = model_->module;
    torch::Tensor leaf = edge_vectors.to(device_).requires_grad_(true);
    c10::IValue graph = module.get_method("halo_graph")(
        {numbers.to(device_), edges.to(device_), leaf, finite.to(device_)});
    torch::Tensor state = module.get_method("halo_embed")({graph}).toTensor();
    torch::Tensor source = module.get_method("halo_source")({(int64_t) 0, state, graph}).toTensor();
    state = state.narrow(0, 0, n_local_nodes_);
    const int64_t self = reinterpret_cast<int64_t>(this);
    for (int64_t layer = 0; layer < model_->num_interactions; layer++) {
      if (layer > 0)
        source = HaloExchange::apply(
            module.get_method("halo_source")({layer, state, graph}).toTensor(), self);
      state = module.get_method("halo_interaction")({layer, state, source, graph}).toTensor();
    }
    atomic = module.get_method("halo_readout")({state, graph}).toTensor();
    const double backward_start = MPI_Wtime();
    forward_seconds_ += backward_start - forward_start;
    gradient = torch::autograd::grad({atomic.sum()}, {leaf}, {}, false, false, true)[0];
    if (!gradient.defined()) gradient = torch::zeros_like(leaf);
    gradient = gradient.to(torch::kCPU, torch::kFloat64).contiguous();
    atomic = atomic.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    backward_seconds_ += MPI_Wtime() - backward_start;
  } catch (const c10::Error &e) {
    error->one(FLERR, "Pair style mlff: model evaluation failed: {}",
               MLFF::first_line(e.what_without_backtrace()));
  }

  tally_energies(atomic, atom_of_, n_local_nodes_);

  // Newton off: ghost rows of forces (3) and per-atom virials (6) collected here, then summed
  // onto their owners.
  const bool newton = force->newton_pair != 0;
  if (!newton) {
    comm_width_ = 9;
    comm_buf_.assign((size_t) nall * 9, 0.0);
  }
  const bool pair_virial = vflag_global && !vflag_fdotr;
  const double *g = gradient.data_ptr<double>();
  for (int64_t e = 0; e < n_edges; e++) {
    const int i = atom_of_[receivers[e]], j = atom_of_[senders[e]];
    const double fx = energy_factor_ * g[3 * e], fy = energy_factor_ * g[3 * e + 1],
                 fz = energy_factor_ * g[3 * e + 2];
    const double *r = &vectors[3 * e];
    double *fj = (newton || j < nlocal) ? f[j] : comm_row(j);
    f[i][0] += fx;
    f[i][1] += fy;
    f[i][2] += fz;
    fj[0] -= fx;
    fj[1] -= fy;
    fj[2] -= fz;
    if (!pair_virial && !vflag_atom) continue;
    // LAMMPS' order xx yy zz xy xz yz of del (x) f, with del = x_i - x_j = -r, f on i
    const double v[6] = {-r[0] * fx, -r[1] * fy, -r[2] * fz,
                         -r[0] * fy, -r[0] * fz, -r[1] * fz};
    if (pair_virial)
      for (int c = 0; c < 6; c++) virial[c] += v[c];
    if (vflag_atom) {
      double *vj = (newton || j < nlocal) ? vatom[j] : comm_row(j) + 3;
      for (int c = 0; c < 6; c++) {
        vatom[i][c] += 0.5 * v[c];
        vj[c] += 0.5 * v[c];
      }
    }
  }
  if (!newton) send_ghost_rows_to_owners(9);

  if (vflag_fdotr) virial_fdotr_compute();
  compute_seconds_ += MPI_Wtime() - start;
}

void PairMLFF::send_ghost_rows_to_owners(int width)
{
  comm_width_ = width;
  comm->reverse_comm(this, width);
  double **f = atom->f;
  for (int i = 0; i < atom->nlocal; i++) {
    const double *row = comm_row(i);
    for (int c = 0; c < 3; c++) f[i][c] += row[c];
    if (vflag_atom)
      for (int c = 0; c < 6; c++) vatom[i][c] += row[3 + c];
  }
}
