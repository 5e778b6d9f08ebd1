"""ASE bridge: the mlff-plugins model file as an ASE calculator, and MD observers."""
