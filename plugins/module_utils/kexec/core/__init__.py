"""The arch-neutral core of the loader: memory, plans, ELF, device trees, digests."""
