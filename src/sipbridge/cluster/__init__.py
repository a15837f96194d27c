"""Several gateways as one: node identity and membership (heartbeats in the shared
PostgreSQL store), and forwarding an API request or a sideband WebSocket to the node that
holds the call. A gateway on its own is a cluster of one node (`local.LocalNode`)."""
