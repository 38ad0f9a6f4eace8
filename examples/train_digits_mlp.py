"""Train the small MLP that examples/evaluate_digits.toml evaluates, and save its weights.

    python examples/train_digits_mlp.py     # writes examples/digits_mlp.safetensors

Trained on the same seeded 75/25 split of scikit-learn's digits that the config asks for, so the
held-out part is never seen in training.
"""

import os

from genbound.data import load_dataset, split_source
from genbound.models import mlp, save_weights, train_classifier, with_normalization

here = os.path.dirname(os.path.abspath(__file__))
source = load_dataset("digits")
train, _, _ = split_source(source, 0.25, seed=0)
model = mlp(input_shape=(1, 8, 8), num_classes=10, hidden=(64,), seed=0)
train_classifier(with_normalization(model, source.normalization), train, epochs=30, seed=0, progress_bar=False)
save_weights(model, os.path.join(here, "digits_mlp.safetensors"))  # the bare MLP: the config adds the normalization
print("wrote examples/digits_mlp.safetensors")
