/* pair_style mlff: an mlff-plugins model file as a LAMMPS pair style.

     plugin load /path/to/mlffplugin.so
     pair_style mlff [device cpu|cuda] [dtype float32|float64]
     pair_coeff * * aspirin.pt C H O      # element per atom type; NULL for hybrid/overlay

   Each step the model's forward_graph() gets the local and ghost atoms of this rank and the
   edges of a full neighbour list (local and ghost atoms), returns the energies of the local
   atoms, and autograd gives forces on all of them; ghost forces go back to their owners
   (newton pair on). The ghost cutoff is raised to cutoff x interactions + skin, so message
   passing sees exactly what it would see in one domain. Units metal (eV, Angstrom) and real
   (kcal/mol, Angstrom).
   Periodicity, as in every engine: a model trained on periodic cells refuses a box periodic in
   no direction; a model trained on molecules refuses a system whose atoms (made whole) come
   within one cutoff of their own periodic images.
   A type whose mass is more than 0.5 g/mol from its element's standard mass gets a warning (a
   wrong element order in pair_coeff). */

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

  // for fix mlff/monitor
  const MLFF::ModelFile *model() const { return model_.get(); }
  const std::vector<int> &type_atomic_numbers() const { return type_z_; }

 protected:
  void allocate();
  void check_isolated();    // molecular models: no atom may see a periodic image
  void check_masses();      // warn when a type's mass is not its element's

  std::unique_ptr<MLFF::ModelFile> model_;
  std::vector<int> type_z_;          // atomic number per type (index 1..ntypes), 0 = NULL
  std::vector<char> mass_checked_;   // per type: mass compared with its element's already
  torch::Device device_{torch::kCPU};
  std::string device_name_ = "cpu";
  std::string dtype_name_;           // empty: the model file's own dtype
  double energy_factor_ = 1.0;       // eV -> LAMMPS energy unit
};

}    // namespace LAMMPS_NS

#endif
#endif
