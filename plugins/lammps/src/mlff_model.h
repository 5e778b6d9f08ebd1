/* The mlff-plugins model file, as the LAMMPS styles see it: the TorchScript module plus the
   facts from its mlff.json metadata. Shared by pair_style mlff and fix mlff/monitor. */

#ifndef MLFF_MODEL_H
#define MLFF_MODEL_H

#include <torch/script.h>

#include <string>
#include <vector>

namespace MLFF {

struct ModelFile {
  torch::jit::script::Module module;
  std::string path;
  std::vector<int> species;  // atomic numbers the model knows
  double cutoff = 0.0;       // Angstrom
  int num_interactions = 0;  // message-passing depth: receptive field = cutoff * this
  std::string dtype;         // "float32" or "float64"
  bool periodic_known = false;
  bool periodic = false;     // trained on periodic cells
  bool per_atom_energies = true;  // forward_graph works (false: a TorchScript module imported
                                  // without atomic_energies; mlff.json "per_atom_energies")
  int committee_size = 1;    // members of a committee (mlff.json "committee_size"); 1: one model
  std::vector<int> halo_widths;  // per layer, doubles a neighbour needs (mlff.json "halo"
                                 // "source_widths"); empty: no halo_* methods (whole mode only)
};

// Load and validate a model file; throws std::runtime_error with a message naming the file
// and the problem (missing file, not TorchScript, no mlff.json, missing keys or methods).
ModelFile load_model_file(const std::string &path, const torch::Device &device);

// The first line of a message (TorchScript errors carry a traceback after it).
inline std::string first_line(const std::string &text)
{
  return text.substr(0, text.find('\n'));
}

// Atomic number of an element symbol ("C" -> 6), or -1 when unknown.
int atomic_number(const std::string &symbol);

// Element symbol of an atomic number ("?" when out of range).
std::string element_symbol(int z);

// Covalent radius in Angstrom (Cordero et al. 2008, as in ASE), or 1.5 when not tabulated.
double covalent_radius(int z);

// Torch dtype of "float32"/"float64"; throws for anything else.
torch::Dtype parse_dtype(const std::string &name);

// Convert the floating-point parameters and buffers of a module to `dtype`, leaving integer
// buffers (species tables, indices) alone. (Module::to(dtype) converts those too.)
void convert_floating_point(torch::jit::script::Module &module, torch::Dtype dtype);

}  // namespace MLFF

#endif
