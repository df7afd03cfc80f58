"""Package data: boilerplate, lookup tables, atlas and detector files."""
