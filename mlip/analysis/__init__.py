"""Materials-informatics toolkit around the potential (optional extra).

Install with ``pip install -e '.[analysis]'`` (scikit-learn, mendeleev, shap).
One module per job; import them directly:

* :mod:`mlip.analysis.data`: EMT mixing energies and bulk moduli of random fcc alloys;
* :mod:`mlip.analysis.composition`: formula parsing and composition features;
* :mod:`mlip.analysis.models`: scikit-learn pipelines and cross-validated error reports;
* :mod:`mlip.analysis.descriptors`: tolerance / octahedral factors, power-law fits;
* :mod:`mlip.analysis.clustering`: DBSCAN on distance matrices and atomic environments;
* :mod:`mlip.analysis.interpret`: per-atom energy reports, Shapley values, motif removal;
* :mod:`mlip.analysis.defects`: contrastive (triplet-loss) embeddings of defect images.

Nothing in the rest of mlip imports this package.
"""

from mlip.analysis._extra import require

require("sklearn", "mendeleev")
