/* fix mlff/monitor: bond-collapse and unexplored-frame guardrails for LAMMPS runs.

     fix ID group mlff/monitor N model.pt [threshold 0.5] [explore yes|no] [stop yes|no]
                                          [stop_unexplored yes|no] [file flags.txt]
                                          [frames flagged.xyz] [elements E1 E2 ...]

   Every N steps the positions of all atoms are gathered to rank 0, which checks every bond
   against its length at the start of the run (bonds from the data file's topology when
   there is one, else from covalent radii of the first frame) and classifies the frame with the
   model file's explore() method. Flagged steps are written to `file`, flagged frames to
   `frames` (extended XYZ, for relabelling); with `stop yes` a collapsed frame (with
   `stop_unexplored yes` also an unexplored one) ends the run cleanly, as fix halt does. Elements per type come from pair_style mlff, or `elements`.
   Global vector: [1] largest bond deviation (Angstrom), [2] distance/radius of the nearest
   conformation cluster (NaN without reference clusters), [3] number of flagged checks,
   [4] 1 if the monitor stopped the last run. */

#ifdef FIX_CLASS
// clang-format off
FixStyle(mlff/monitor,FixMLFFMonitor);
// clang-format on
#else

#ifndef LMP_FIX_MLFF_MONITOR_H
#define LMP_FIX_MLFF_MONITOR_H

#include "fix.h"

#include "mlff_model.h"

#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace LAMMPS_NS {

class FixMLFFMonitor : public Fix {
 public:
  FixMLFFMonitor(class LAMMPS *, int, char **);
  ~FixMLFFMonitor() override;

  int setmask() override;
  void init() override;
  void setup(int) override;
  void end_of_step() override;
  void post_run() override;
  double compute_vector(int) override;

 private:
  // rank 0: positions [natoms*3] (unwrapped, ordered by atom ID) and atomic numbers
  void gather(std::vector<double> &positions, std::vector<int> &numbers);
  void find_bonds(const std::vector<double> &positions, const std::vector<int> &numbers);
  double bond_length(const std::vector<double> &positions, int a, int b) const;
  void check(bool first);
  void write_frame(const std::vector<double> &positions, const std::vector<int> &numbers,
                   const std::string &reason);

  std::string model_path_, file_path_, frames_path_;
  double threshold_ = 0.5;
  bool explore_ = true, stop_ = false, stop_unexplored_ = false;
  std::vector<int> type_z_;    // atomic number per type (index 1..ntypes)
  std::unique_ptr<MLFF::ModelFile> model_;    // rank 0 only
  std::vector<long> tags_;                    // rank 0: atom IDs, ascending (gather order)
  std::vector<std::pair<int, int>> bonds_;    // indices into the ID-ordered arrays
  std::vector<double> reference_;             // Angstrom
  FILE *fp_ = nullptr;
  double last_deviation_ = 0.0, last_ratio_ = 0.0;
  int flagged_ = 0;
  bool stopped_ = false;        // this run was stopped
  bool stopped_flag_ = false;   // the last run was stopped (vector element 4)
  bool have_reference_ = false;
};

}    // namespace LAMMPS_NS

#endif
#endif
