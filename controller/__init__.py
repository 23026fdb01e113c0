"""The online controller: policies exported by ``train.py export`` acting on a live cluster.

Dependencies: onnxruntime, numpy, the official ``kubernetes`` client, ``requests`` (Prometheus'
HTTP API) and ``prometheus_client`` (its own ``/metrics``). It imports neither torch nor the
twins (a test checks it in a fresh interpreter), so its image stays small
(``controller/requirements.txt``, ``controller/Dockerfile``).

Modules: :mod:`~controller.policy` (the ONNX file and its metadata), :mod:`~controller.observation`
(the env's observation from live metrics), :mod:`~controller.prometheus` (queries and holds),
:mod:`~controller.kube` (Deployments' replicas and scale), :mod:`~controller.safety` (bounds,
stabilisation, maximum change), :mod:`~controller.autoscaler` (the loop),
:mod:`~controller.telemetry` (``/metrics``, ``/healthz``), :mod:`~controller.cli`.
"""
