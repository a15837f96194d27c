"""Calls: what the gateway does with each call the SIP core reports."""
