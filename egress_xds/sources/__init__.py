"""Where objects come from: a watched manifest directory (``files``).

In: paths on disk (and, later, the Kubernetes API). Out: ``LoadResult`` values (objects,
errors, notices) for the wiring in ``egress_xds.serve``, which hands them to the translator.
"""
