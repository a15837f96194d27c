"""The HTTP side of the gateway: the API applications call and the webhooks it sends them."""
