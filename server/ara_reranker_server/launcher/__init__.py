"""Start the stack as ``make run`` does: a real tritonserver with the model repository (``triton_launcher``), the
gateway as a child process (``gateway_process``), both together in the foreground (``run``); ``child_process`` is
the one way a server is started, waited for and stopped. The gateway itself imports nothing from here."""
