"""The media plane: RTP and RTCP, G.711 and DTMF, jitter buffer, paced playout, recording."""
