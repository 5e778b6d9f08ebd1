#include "mlff_model.h"

#include "json.h"  // LAMMPS's bundled nlohmann json (LAMMPS_NS::json)

#include <cmath>
#include <fstream>
#include <utility>
#include <vector>
#include <stdexcept>

namespace MLFF {

namespace {

const char *const SYMBOLS[] = {
    "X",  "H",  "He", "Li", "Be", "B",  "C",  "N",  "O",  "F",  "Ne", "Na", "Mg", "Al", "Si",
    "P",  "S",  "Cl", "Ar", "K",  "Ca", "Sc", "Ti", "V",  "Cr", "Mn", "Fe", "Co", "Ni", "Cu",
    "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y",  "Zr", "Nb", "Mo", "Tc", "Ru",
    "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I",  "Xe", "Cs", "Ba", "La", "Ce", "Pr",
    "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W",
    "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac",
    "Th", "Pa", "U",  "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf",
    "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og"};
constexpr int NUM_SYMBOLS = sizeof(SYMBOLS) / sizeof(SYMBOLS[0]);

// Cordero et al., Dalton Trans. 2832 (2008), as tabulated by ASE (index = atomic number).
const double RADII[] = {
    0.20, 0.31, 0.28, 1.28, 0.96, 0.84, 0.76, 0.71, 0.66, 0.57, 0.58, 1.66, 1.41, 1.21, 1.11,
    1.07, 1.05, 1.02, 1.06, 2.03, 1.76, 1.70, 1.60, 1.53, 1.39, 1.39, 1.32, 1.26, 1.24, 1.32,
    1.22, 1.22, 1.20, 1.19, 1.20, 1.20, 1.16, 2.20, 1.95, 1.90, 1.75, 1.64, 1.54, 1.47, 1.46,
    1.42, 1.39, 1.45, 1.44, 1.42, 1.39, 1.39, 1.38, 1.39, 1.40, 2.44, 2.15, 2.07, 2.04, 2.03,
    2.01, 1.99, 1.98, 1.98, 1.96, 1.94, 1.92, 1.92, 1.89, 1.90, 1.87, 1.87, 1.75, 1.70, 1.62,
    1.51, 1.44, 1.41, 1.36, 1.36, 1.32, 1.45, 1.46, 1.48, 1.40, 1.50, 1.50, 2.60, 2.21, 2.15,
    2.06, 2.00, 1.96, 1.90, 1.87, 1.80, 1.69};
constexpr int NUM_RADII = sizeof(RADII) / sizeof(RADII[0]);

void check_method(const torch::jit::script::Module &module, const std::string &name,
                  size_t tensors, const std::string &path)
{
  auto method = module.find_method(name);
  if (!method) throw std::runtime_error(path + ": the model has no scripted method " + name + "()");
  const auto &schema = method->function().getSchema();
  // arguments include self
  if (schema.arguments().size() != tensors + 1)
    throw std::runtime_error(path + ": method " + name + "() takes " +
                             std::to_string(schema.arguments().size() - 1) +
                             " arguments, expected " + std::to_string(tensors));
}

}  // namespace

int atomic_number(const std::string &symbol)
{
  for (int z = 1; z < NUM_SYMBOLS; ++z)
    if (symbol == SYMBOLS[z]) return z;
  return -1;
}

std::string element_symbol(int z)
{
  return (z > 0 && z < NUM_SYMBOLS) ? SYMBOLS[z] : "?";
}

double covalent_radius(int z)
{
  return (z > 0 && z < NUM_RADII) ? RADII[z] : 1.5;
}

torch::Dtype parse_dtype(const std::string &name)
{
  if (name == "float32") return torch::kFloat32;
  if (name == "float64") return torch::kFloat64;
  throw std::runtime_error("dtype must be float32 or float64, not '" + name + "'");
}

void convert_floating_point(torch::jit::script::Module &module, torch::Dtype dtype)
{
  torch::NoGradGuard no_grad;
  for (const auto &item : module.named_parameters(true))
    if (item.value.is_floating_point()) item.value.set_data(item.value.to(dtype));
  for (const auto &item : module.named_buffers(true))
    if (item.value.is_floating_point()) item.value.set_data(item.value.to(dtype));
}

// Absent means true: only files imported from a TorchScript module without atomic_energies
// say false.
static bool stated_per_atom_energies(const LAMMPS_NS::json &meta)
{
  return !(meta.contains("per_atom_energies") && meta["per_atom_energies"] == false);
}

// A hand-edited mlff.json must not contradict the weights it travels with (the rule of
// mlff_core.export.loading._check_metadata_against_module): the pair style takes the cutoff,
// species and units from the metadata.
static void check_metadata_against_module(torch::jit::script::Module &module,
                                          const LAMMPS_NS::json &meta, const std::string &path)
{
  const std::string edited = "; was mlff.json edited by hand?";
  const std::pair<const char *, const char *> units[] = {{"energy_unit", "eV"},
                                                         {"length_unit", "Angstrom"}};
  for (const auto &unit : units) {
    if (meta.contains(unit.first) && meta[unit.first] != unit.second)
      throw std::runtime_error(path + ": mlff.json says " + unit.first + " " +
                               meta[unit.first].dump() + " but model files hold " + unit.second +
                               edited);
  }
  if (!module.hasattr("potential")) return;
  torch::jit::script::Module potential = module.attr("potential").toModule();
  if (potential.hasattr("cutoff")) {
    const double scripted = potential.attr("cutoff").toDouble();
    if (std::abs(meta["cutoff"].get<double>() - scripted) > 1e-9)
      throw std::runtime_error(path + ": mlff.json says cutoff " + meta["cutoff"].dump() +
                               " but the scripted model's is " + std::to_string(scripted) +
                               edited);
  }
  if (potential.hasattr("num_interactions")) {
    const int64_t scripted = potential.attr("num_interactions").toInt();
    if (meta["num_interactions"].get<int64_t>() != scripted)
      throw std::runtime_error(path + ": mlff.json says num_interactions " +
                               meta["num_interactions"].dump() + " but the scripted model's is " +
                               std::to_string(scripted) + edited);
  }
  if (potential.hasattr("per_atom_energies")) {
    const bool scripted = potential.attr("per_atom_energies").toBool();
    const bool stated = stated_per_atom_energies(meta);
    if (stated != scripted)
      throw std::runtime_error(path + ": mlff.json says per_atom_energies " +
                               (stated ? "true" : "false") + " but the scripted model's is " +
                               (scripted ? "true" : "false") + edited);
  }
  if (potential.hasattr("species")) {
    torch::Tensor species = potential.attr("species").toTensor().to(torch::kCPU).to(torch::kLong);
    const std::vector<int64_t> scripted(species.data_ptr<int64_t>(),
                                        species.data_ptr<int64_t>() + species.numel());
    if (meta["species"].get<std::vector<int64_t>>() != scripted)
      throw std::runtime_error(path + ": mlff.json says species " + meta["species"].dump() +
                               " but the scripted model's differ" + edited);
  }
}

ModelFile load_model_file(const std::string &path, const torch::Device &device)
{
  {
    std::ifstream probe(path);
    if (!probe.good()) throw std::runtime_error(path + ": model file not found");
  }
  ModelFile model;
  model.path = path;
  torch::jit::ExtraFilesMap extra{{"mlff.json", ""}};
  try {
    model.module = torch::jit::load(path, device, extra);
  } catch (const c10::Error &e) {
    std::string what = e.what_without_backtrace();
    throw std::runtime_error(path + ": not a TorchScript model file (" +
                             what.substr(0, what.find('\n')) + ")");
  }
  model.module.eval();
  const std::string &raw = extra["mlff.json"];
  if (raw.empty())
    throw std::runtime_error(path + ": missing mlff.json metadata; export it with `mlff export`");
  LAMMPS_NS::json meta;
  try {
    meta = LAMMPS_NS::json::parse(raw);
  } catch (const std::exception &e) {
    throw std::runtime_error(path + ": mlff.json is not valid JSON (" + e.what() + ")");
  }
  for (const char *key : {"format_version", "species", "cutoff", "num_interactions", "dtype"})
    if (!meta.contains(key)) throw std::runtime_error(path + ": mlff.json lacks " + key);
  const int version = meta["format_version"].is_number_integer()
                          ? meta["format_version"].get<int>() : -1;
  if (version != 1 && version != 2)
    throw std::runtime_error(path + ": unsupported format_version " +
                             meta["format_version"].dump() + " (this plugin reads 1 and 2)");
  model.species = meta["species"].get<std::vector<int>>();
  model.cutoff = meta["cutoff"].get<double>();
  model.num_interactions = meta["num_interactions"].get<int>();
  model.dtype = meta["dtype"].get<std::string>();
  if (meta.contains("periodic") && !meta["periodic"].is_null()) {
    model.periodic_known = true;
    model.periodic = meta["periodic"].get<bool>();
  }
  model.per_atom_energies = stated_per_atom_energies(meta);
  if (meta.contains("committee_size") && meta["committee_size"].is_number_integer())
    model.committee_size = meta["committee_size"].get<int>();
  if (model.committee_size > 1) check_method(model.module, "committee_forces", 4, path);
  if (version >= 2 && meta.contains("halo") && !meta["halo"].is_null()) {
    const auto &halo = meta["halo"];
    if (!halo.is_object() || !halo.contains("source_widths") ||
        !halo["source_widths"].is_array())
      throw std::runtime_error(path + ": mlff.json \"halo\" must be null or hold "
                               "\"source_widths\" (one width per interaction layer)");
    model.halo_widths = halo["source_widths"].get<std::vector<int>>();
    if ((int) model.halo_widths.size() != model.num_interactions)
      throw std::runtime_error(path + ": mlff.json \"halo\" has " +
                               std::to_string(model.halo_widths.size()) +
                               " source widths for " + std::to_string(model.num_interactions) +
                               " interaction layers");
    for (int width : model.halo_widths)
      if (width <= 0) throw std::runtime_error(path + ": mlff.json \"halo\" widths must be > 0");
    check_method(model.module, "halo_graph", 4, path);
    check_method(model.module, "halo_embed", 1, path);
    check_method(model.module, "halo_source", 3, path);
    check_method(model.module, "halo_interaction", 4, path);
    check_method(model.module, "halo_readout", 2, path);
  }
  check_metadata_against_module(model.module, meta, path);
  check_method(model.module, "forward_graph", 4, path);
  check_method(model.module, "explore", 2, path);
  check_method(model.module, "explore_periodic", 4, path);
  return model;
}

}  // namespace MLFF
