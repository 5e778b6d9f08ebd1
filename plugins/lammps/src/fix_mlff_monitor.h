/* fix mlff/monitor: bond-collapse and unexplored-frame guardrails for LAMMPS runs.

     fix ID group mlff/monitor N model.pt [threshold 0.5] [explore yes|no] [stop yes|no]
                                          [stop_unexplored yes|no] [warn_ratio 1.0]
                                          [stop_ratio R] [warn_deviation W]
                                          [stop_deviation S] [file monitor.log]
                                          [frames flagged.xyz] [last_good last_good.xyz]
                                          [elements E1 E2 ...]

   The rules are those of the Python monitors (mlff_core/monitors/detectors.py), held together
   by tests/test_monitor_parity.py:
   - Only the atoms of the fix group are watched (an ML/MM run with pair_style hybrid/overlay
     watches its ML group; atom types outside the group may be NULL).
   - Every N steps the group's positions are gathered to rank 0 (unwrapped, ordered by atom
     ID). A frame is collapsed when a bond's minimum-image length deviates from its length at
     the start of the first run by more than `threshold` (Angstrom), or when a position or
     force is not finite; the latter is checked at every step, so a run stops before LAMMPS
     meets NaN coordinates. Bonds come from the data file's topology (bonds within the
     group), else from the first frame: atoms i, j are bonded when closer than
     r_i + r_j + 0.3 Angstrom (covalent radii of Cordero et al., as in ASE; minimum image).
   - The frame is classified with the model file's explore() (a molecule, made whole along
     its bonds), or explore_periodic() with the box when the model was trained on periodic
     cells ("periodic": true in mlff.json).
   - `file`: one line per check and monitor, `step<TAB>ok|FLAGGED<TAB>collapse: ...` and
     `...<TAB>exploration: ...`, worded as the Python monitors' logs.
   - `frames`: flagged frames appended as extended XYZ (one write per frame, flushed), a
     molecule whole and non-periodic unless the model is periodic; `last_good`: on a stop, the
     last checked frame that did not trigger it, in the same format.
   - The exploration score is the larger of the distance/radius ratio and, for molecules, the
     bond score (the bond furthest outside its training range, explore()'s third element;
     `..., bond I-J score X` in the log); above 1 a frame is unexplored. It is graded
     (DeePMD-kit's trust levels): above `warn_ratio` (default 1.0) a frame is flagged; above `stop_ratio` (default:
     warn_ratio, at least warn_ratio) `stop_unexplored yes` acts on it.
   - With `warn_deviation W` (eV/Angstrom; a committee model file, mlff train --committee M)
     the frame is also given to the file's committee_forces() (the same molecule or periodic
     frame as explore) and its force deviation max_i sqrt((1/M) sum_k |F_i^k - mean_k F_i|^2)
     is logged (`...<TAB>deviation: force deviation X eV/Å (atom ID)`), flagged above W and,
     with `stop_deviation S` (at least W), ends the run above S.
   With `stop yes` a collapsed frame (with `stop_unexplored yes` also a frame above stop_ratio)
   ends the run cleanly, as fix halt does. Elements per type come from pair_style mlff, or
   `elements`.
   Global vector: [1] largest bond deviation (Angstrom), [2] distance/radius of the nearest
   conformation cluster (NaN without reference clusters), [3] number of flagged checks,
   [4] 1 if the monitor stopped the last run, [5] the step at which it stopped (-1: none),
   [6] the committee force deviation (eV/Angstrom; NaN when not monitored), [7] what stopped
   the last run: 0 nothing, 1 collapse, 2 exploration, 3 deviation (the first of these that
   acted on the frame, in that order), [8] the bond score (NaN for periodic systems and files
   written before it). */

#ifdef FIX_CLASS
// clang-format off
FixStyle(mlff/monitor,FixMLFFMonitor);
// clang-format on
#else

#ifndef LMP_FIX_MLFF_MONITOR_H
#define LMP_FIX_MLFF_MONITOR_H

#include "fix.h"

#include "mlff_model.h"

#include <array>
#include <cstdio>
#include <limits>
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
  // rank 0: positions [natoms*3] of the group (unwrapped, ordered by atom ID), atomic
  // numbers, and whether any position or force is not finite (with the first such atom ID)
  void gather(std::vector<double> &positions, std::vector<int> &numbers);
  void find_bonds(const std::vector<double> &positions, const std::vector<int> &numbers);
  double bond_length(const std::vector<double> &positions, int a, int b) const;
  void make_whole(std::vector<double> &positions) const;
  // the first group atom (ID) with a non-finite position (what = 0) or force (what = 1), on
  // every rank; -1 when all are finite
  long first_non_finite(int &what) const;
  void check(bool first, long bad_atom, int bad_what);
  // rank 0: the committee force deviation (eV/A) of a frame and its atom (index into the
  // ID-ordered arrays); NaN when the members' forces are not finite
  double force_deviation(std::vector<double> &positions, const std::vector<int> &numbers,
                         int &atom);
  // rank 0: (positions [N,3], atomic numbers [N], cell [3,3], pbc [3]) of a gathered frame as
  // the model sees it: a molecule (zero cell, no pbc) unless the model is periodic
  std::array<torch::Tensor, 4> frame_tensors(std::vector<double> &positions,
                                             const std::vector<int> &numbers) const;
  std::string frame_text(const std::vector<double> &positions, const std::vector<int> &numbers,
                         bigint step, const std::string &reason) const;

  std::string model_path_, file_path_, frames_path_, last_good_path_;
  int check_every_ = 1;    // N: steps between full checks (finiteness is checked every step)
  double threshold_ = 0.5;
  bool explore_ = true, stop_ = false, stop_unexplored_ = false;
  double warn_ratio_ = 1.0;                                         // flag above
  double stop_ratio_ = std::numeric_limits<double>::quiet_NaN();   // act above (NaN: warn)
  double warn_deviation_ = std::numeric_limits<double>::quiet_NaN();  // eV/A; NaN: off
  double stop_deviation_ = std::numeric_limits<double>::quiet_NaN();  // eV/A; NaN: never stop
  std::vector<int> type_z_;    // atomic number per type (index 1..ntypes)
  std::unique_ptr<MLFF::ModelFile> model_;    // rank 0 only
  bool molecule_ = true;                      // model not trained on periodic cells
  std::vector<long> tags_;                    // rank 0: atom IDs, ascending (gather order)
  std::vector<std::pair<int, int>> bonds_;    // indices into the ID-ordered arrays
  std::vector<std::pair<int, int>> tree_;     // (child, parent) in breadth-first order
  std::vector<double> reference_;             // Angstrom
  std::string last_good_;                     // rank 0: text of the last good frame
  FILE *fp_ = nullptr, *frames_ = nullptr;
  double last_deviation_ = 0.0, last_ratio_ = 0.0, last_bond_score_ = 0.0;
  double last_force_deviation_ = std::numeric_limits<double>::quiet_NaN();
  int stopped_by_ = 0, stopped_by_last_ = 0;    // vector element 7 (this run, the last run)
  int flagged_ = 0;
  bool stopped_ = false;        // this run was stopped
  bool stopped_flag_ = false;   // the last run was stopped (vector element 4)
  bigint stop_step_ = -1;
  bigint last_checked_step_ = -1;
  bool have_reference_ = false;
};

}    // namespace LAMMPS_NS

#endif
#endif
