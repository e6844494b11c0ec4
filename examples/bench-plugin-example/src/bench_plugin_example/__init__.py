"""Example bench plug-in: `signsgd` (optimizer), `resmlp` (model), `spirals` (dataset)."""
