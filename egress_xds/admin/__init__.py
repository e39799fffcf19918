"""The project's own admin API: generated messages and stubs (``v1``), their conversion to
and from the JSON the CLI prints (``convert``), and the CLI's client side (``client``).

In: ``protos/egress_xds/admin/v1/admin.proto`` (generated into ``v1/`` by
``protos/generate.py``; never edit ``v1/*_pb2*.py`` by hand). Served by
``egress_xds.server.admin``; called by ``egress-xds explain --server`` and
``egress-xds status --server``. Imports neither the translators nor the server.
"""
