"""The generated dataset the mocksource tests share (the `generated_dataset` fixture)."""

# The smallest count at which every invalid kind appears (mocksource.dataset.ALL_KINDS_FROM_COUNT).
GENERATED_COUNT = 1000
GENERATED_SEED = 42
