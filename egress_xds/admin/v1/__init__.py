"""Generated code of ``egress_xds.admin.v1`` (``protos/generate.py``): do not edit."""
