"""Image-classification data (docs/contract.md §4): datasets by name or ImageFolder archive, decoded once into
uint8 tensors (``datasets``); batches made in memory with tensor-side augmentation (``loader``)."""
