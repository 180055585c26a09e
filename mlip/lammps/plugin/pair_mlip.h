// pair_mlip.h: LAMMPS pair style `mlip`, a Behler-Parrinello neural-network
// potential exported by `mlip export lammps` (see mlip/lammps/plugin.py for the
// model file).  Symmetry functions and their derivatives come from the headers of
// mlip's descriptor kernel (mlip/kernels/native/*.h), the networks are evaluated
// here in float64.  Full neighbour list, newton on (forces on ghost atoms are
// reverse-communicated by LAMMPS); energy, forces, global and per-atom energy and
// virial (the virial of atom i's energy is assigned to i).
#pragma once

#include <string>
#include <vector>

#include "native/scratch.h"
#include "native/table.h"
#include "pair.h"

namespace LAMMPS_NS {

class PairMLIP : public Pair {
 public:
  explicit PairMLIP(class LAMMPS *);
  ~PairMLIP() override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  void setup() override;
  void compute(int, int) override;

  struct Layer {
    int inputs = 0, width = 0, activation = 0;
    std::vector<double> kernel, bias;  // kernel [inputs, width] row major
  };
  struct Network {  // one element's feature scaling and network
    std::vector<int> columns;  // union columns of its features
    std::vector<double> shift, scale;
    std::vector<Layer> layers;
    double reference = 0;
  };

 protected:
  std::string model_path;
  std::vector<std::string> elements;
  mlip::native::Table table;
  int cutoff_type = 0;
  double cutoff_alpha = 0, cutoff = 0;
  size_t members = 1;               // ensemble members (their mean energy)
  std::vector<Network> networks;     // [members * elements], member-major
  int *map = nullptr;  // [ntypes + 1] element index of each atom type, -1 for NULL
  bool model_loaded = false;

  // per-atom work buffers
  mlip::native::Scratch<double> scratch;
  std::vector<double> rij, grad, features, cotangent;
  std::vector<int> slots;
  std::vector<int32_t> species;
  std::vector<std::vector<double>> activations, derivatives;
  std::vector<double> backward_a, backward_b;  // dE/dh of the layer above and below

  void allocate();
  void read_model(const char *path);
  void parse_model(const std::string &bytes, const char *path);
  double atom_energy(const Network &net, const double *g, double *dg);
};

}  // namespace LAMMPS_NS
