/* pair_style mlff: an mlff-plugins model file as a LAMMPS pair style.

     plugin load /path/to/mlffplugin.so
     pair_style mlff [device cpu|cuda] [dtype float32|float64] [halo auto|yes|no]
     pair_coeff * * aspirin.pt C H O      # element per atom type; NULL for hybrid/overlay

   Two modes.
   Halo mode (the default for files whose mlff.json has "halo": SchNet, PaiNN, committees of
   them): ghosts only to cutoff + skin; the model runs one interaction layer at a time
   (its halo_* methods, contract in mlff_core/models/halo.py) and before each layer the
   features of ghost atoms are filled from their owners (forward communication); in the
   backward pass the gradients reaching ghost features are summed onto their owners (reverse
   communication), so one backward pass gives the exact gradient of the energy with respect to
   every edge vector of this rank. Forces, the global virial and per-atom virials (compute
   stress/atom) follow from the edges; newton pair on or off.
   Whole mode (halo no, and files without halo methods: MACE, NequIP, imported TorchScript):
   forward_graph() gets the local and ghost atoms and the edges of a full neighbour list (local
   and ghost atoms), returns the energies of the local atoms, and autograd gives forces on all
   of them; ghost forces go back to their owners (newton pair on). The ghost cutoff is raised
   to cutoff x interactions + skin, so message passing sees exactly what it would see in one
   domain. Global virial only.
   Both: per-atom energies (compute pe/atom); units metal (eV, Angstrom) and real (kcal/mol,
   Angstrom).
   Periodicity, as in every engine: a model trained on periodic cells refuses a box periodic in
   no direction; a model trained on molecules refuses a system whose atoms (made whole) come
   within one cutoff of their own periodic images.
   A type whose mass is more than 0.5 g/mol from its element's standard mass gets a warning (a
   wrong element order in pair_coeff).
   While a pair style mlff exists, torch's CPU tensors of 1 MiB or more come from a block cache
   that keeps their memory between steps (host_block_cache.h). */

#ifdef PAIR_CLASS
// clang-format off
PairStyle(mlff,PairMLFF);
// clang-format on
#else

#ifndef LMP_PAIR_MLFF_H
#define LMP_PAIR_MLFF_H

#include "pair.h"

#include "mlff_model.h"

#include <memory>
#include <string>
#include <vector>

namespace LAMMPS_NS {

class PairMLFF : public Pair {
 public:
  PairMLFF(class LAMMPS *);
  ~PairMLFF() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  void setup() override;    // a run starts: timers to zero
  void finish() override;   // a run ends: halo mode prints its exchange's share of the time

  // halo mode: LAMMPS communication of per-atom rows of comm_buf_ (comm_width_ doubles each)
  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

  // Fill ghost rows of `local` ([local nodes, W], model device) from their owners: returns
  // [all nodes, W]; and the reverse: node gradients [all nodes, W] -> [local nodes, W], ghost
  // rows summed onto their owners' (possibly on other ranks). Used by the exchange op.
  torch::Tensor halo_forward(const torch::Tensor &local);
  torch::Tensor halo_reverse(const torch::Tensor &nodes);

  // for fix mlff/monitor
  const MLFF::ModelFile *model() const { return model_.get(); }
  const std::vector<int> &type_atomic_numbers() const { return type_z_; }

 protected:
  void allocate();
  void check_isolated();    // molecular models: no atom may see a periodic image
  void check_masses();      // warn when a type's mass is not its element's
  bool halo_mode() const { return halo_; }
  void compute_whole(int eflag, int vflag);
  void compute_halo(int eflag, int vflag);
  void send_ghost_rows_to_owners(int width);  // newton off: comm_buf_ ghost rows -> owners
  // eng_vdwl and eatom from per-atom energies [nodes >= n_local] of atoms atom_of[0..n_local)
  void tally_energies(const torch::Tensor &atomic, const std::vector<int> &atom_of, int n_local);
  double *comm_row(int i) { return comm_buf_.data() + (size_t) i * comm_width_; }

  std::unique_ptr<MLFF::ModelFile> model_;
  std::vector<int> type_z_;          // atomic number per type (index 1..ntypes), 0 = NULL
  std::vector<char> mass_checked_;   // per type: mass compared with its element's already
  torch::Device device_{torch::kCPU};
  std::string device_name_ = "cpu";
  std::string dtype_name_;           // empty: the model file's own dtype
  double energy_factor_ = 1.0;       // eV -> LAMMPS energy unit
  std::string halo_setting_ = "auto";  // pair_style ... halo auto|yes|no
  bool halo_ = false;                // halo mode: decided in init_style (file and setting)

  // halo mode, per step: nodes (local ML atoms, then the ghost ML atoms some edge reaches)
  std::vector<int> atom_of_;         // LAMMPS atom index of each node
  int n_local_nodes_ = 0;
  std::vector<double> comm_buf_;     // [nall x comm_width_], row = LAMMPS atom index
  int comm_width_ = 0;
  double exchange_seconds_ = 0.0;    // this run: in halo_forward/halo_reverse (copies + MPI)
  double forward_seconds_ = 0.0;     // this run: the model's layers, exchanges included
  double backward_seconds_ = 0.0;    // this run: the backward pass, reverse exchanges included
  double compute_seconds_ = 0.0;     // this run: in compute_halo
};

}    // namespace LAMMPS_NS

#endif
#endif
