"""Development tooling that runs from a checkout, never installed: ``protogen`` (``make proto``) generates the gRPC
stubs of ``proto/`` into the client's and the service's packages."""
