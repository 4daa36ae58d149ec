"""Development-only credentials, trusted only when APP_ENV=development.

They are public (they sit in this repository): production never falls back to them, and the
settings refuse to start a production process that lacks its own secret or key.
"""

#: The dev Svix signing secret the gateway accepts in development.
DEV_WEBHOOK_SECRET = "whsec_c2l0ZXZpZXctZGV2ZWxvcG1lbnQtb25seS1zZWNyZXQh"  # noqa: S105 - public, development only

#: The public half of the dev session-token key (the private half is in siteview_devstack).
DEV_JWT_PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAnDkTQ6ZfGE4xcIu2OK/4
YLepe9uGynfhXJynf4+eOTRpBWZNJBYSuYdODuNzxCiDIuD+W2hMZ1iFhg3EDVT1
3yR3ZWx+7ywDuvophIv0kCTv8o/Ql6SawX6yUO9HE3/K4+9WAnPOboYHqYQZd8w/
+r88LNLrJIq2fwT2iW/2RQyFCfzTUx74IWdDMWzi727CtW/iOLM7KPvFhiD9wAMe
mbyzvC16r7K+A3CuUJQN4k6wpDpxNtdr1oEhPblwLGUezir847Tqh/lTja/jJacF
mmD+V29BIRL/GQ5U2ypnzrVCD36OCH7DMJ4E95rNFc0IVI7EImG48eB3QqLV9YEm
jQIDAQAB
-----END PUBLIC KEY-----
"""

DEV_ISSUER = "http://127.0.0.1:8000/dev-clerk"
DEV_JWT_KID = "siteview-dev-key"
