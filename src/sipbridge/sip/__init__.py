"""Sans-IO SIP (RFC 3261) and the thin asyncio transport around it."""
