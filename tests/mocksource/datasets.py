"""The generated dataset the mocksource tests share (the `generated_dataset` fixture)."""

# The smallest count at which every invalid kind appears (mocksource.dataset.ALL_KINDS_FROM_COUNT).
GENERATED_COUNT = 1000
GENERATED_SEED = 42


def generation_files(path):
    """The files of the generation `path` names, by name: what must be byte-identical."""
    return {entry.name: entry.read_bytes() for entry in sorted(path.resolve().parent.iterdir())}
