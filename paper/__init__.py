"""Reproduction package for the freight paper's QKD-versus-RSA comparison (``make paper``).

Every figure in ``docs/paper-comparison.md`` is measured or computed here at run time: the QKD
side from the project's simulator (``sim_backend``) and post-processing core (``postprocessing``),
the RSA side from a real factoring library (python-flint). Nothing here is imported by the node.
"""
