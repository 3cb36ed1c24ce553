"""The doctors' form for a model trained with a reduction (the pipeline's Reduction parameter: PCA, LDA): it reads
the values a category learned and the codes the model knows from the encoder's names, which a reduction renames to
its components in the model's feature_names. Under PCA the ward became a free-text box (a typo an unseen value the
model ignores) and the codes list was empty."""
from __future__ import annotations

import numpy as np
import pytest

from app.form import load_form_spec
from diagnosa.model import DiagnosaModel


@pytest.fixture(scope="module")
def curated(tmp_path_factory, own_dataset):
    folder = tmp_path_factory.mktemp("reduction")
    rng = np.random.default_rng(2)
    rows = ["pid,f1,ward,codes,label"]
    for i in range(300):
        k = i % 3
        rows.append(f"p{i},{rng.normal(2 * k, 1):.3f},{('east', 'west', 'north')[k]},{('I10', 'E11', 'J45')[k]},"
                    f"{'abc'[k]}")
    config = 'name = "r"\nid_column = "pid"\ntarget = "label"\nlabels = ["a", "b", "c"]\n[columns.codes]\ntype = "codes"\n'
    return folder, own_dataset(folder, "r", "\n".join(rows) + "\n", config)


@pytest.mark.parametrize("reduction", ["none", "pca", "lda"])
def test_the_form_knows_the_learned_values_and_codes_whatever_the_reduction(curated, train_model, reduction):
    folder, data = curated
    model = train_model(folder / reduction, data, {"family": "logistic_regression"}, ("--reduction", reduction))
    spec = load_form_spec(str(model))
    assert sorted(spec.levels["ward"]) == ["east", "north", "west"] and spec.known_codes == ("E11", "I10", "J45")
    metadata = DiagnosaModel.load(model).metadata
    if reduction == "none":
        assert "encoded_feature_names" not in metadata  # the feature names are the encoder's already
    else:
        assert not any(n.startswith("categorical__") for n in metadata["feature_names"])  # components
        assert "categorical__ward_east" in metadata["encoded_feature_names"]
