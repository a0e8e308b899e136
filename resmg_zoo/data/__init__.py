"""Image-classification data (SPEC §4): datasets by name or ImageFolder archive, decoded once into
uint8 tensors (``datasets``); batches made in memory with tensor-side augmentation (``loader``);
and ``relabel``, which cuts a new ImageFolder archive with merged or renamed classes."""
