"""Security of the field link: PKI and broker ACL, signed plans, the audit of signatures.

* :mod:`traffic.security.pki` - CA, broker and client certificates (``traffic pki init``);
* :mod:`traffic.security.mosquitto_config` - the TLS listener and the least-privilege ACL;
* :mod:`traffic.security.signing` - Ed25519 plan signatures (centre signs, field verifies);
* :mod:`traffic.security.audit` - the signature of every dispatched plan, in PostgreSQL.
"""

from traffic.security.signing import PlanSignatureError, PlanSigner, PlanVerifier

__all__ = ["PlanSignatureError", "PlanSigner", "PlanVerifier"]
