/* Registration of pair_style mlff and fix mlff/monitor with LAMMPS (`plugin load`). */

#include "lammpsplugin.h"

#include "fix_mlff_monitor.h"
#include "pair_mlff.h"

#include <cstdlib>

#ifndef MLFF_LAMMPS_VERSION
#error "MLFF_LAMMPS_VERSION (the LAMMPS version string, e.g. \"22 Jul 2025\") must be defined"
#endif

using namespace LAMMPS_NS;

static Pair *pair_mlff_creator(LAMMPS *lmp)
{
  return new PairMLFF(lmp);
}

static Fix *fix_mlff_monitor_creator(LAMMPS *lmp, int argc, char **argv)
{
  return new FixMLFFMonitor(lmp, argc, argv);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  // Transparent huge pages for PyTorch's CPU allocator (read at its first allocation), unless
  // the user chose otherwise: large per-edge tensors otherwise cost more in page faults.
  setenv("THP_MEM_ALLOC_ENABLE", "1", 0);

  auto register_plugin = (lammpsplugin_regfunc) regfunc;
  lammpsplugin_t plugin;
  plugin.version = MLFF_LAMMPS_VERSION;
  plugin.author = "mlff-plugins";
  plugin.handle = handle;

  plugin.style = "pair";
  plugin.name = "mlff";
  plugin.info = "mlff-plugins machine-learning force field (TorchScript model file)";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &pair_mlff_creator;
  (*register_plugin)(&plugin, lmp);

  plugin.style = "fix";
  plugin.name = "mlff/monitor";
  plugin.info = "mlff-plugins bond-collapse and unexplored-frame monitor";
  plugin.creator.v2 = (lammpsplugin_factory2 *) &fix_mlff_monitor_creator;
  (*register_plugin)(&plugin, lmp);
}
