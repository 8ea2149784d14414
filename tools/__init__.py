"""Developer tooling kept out of the runtime package (the wheel and the image ship none of it)."""
