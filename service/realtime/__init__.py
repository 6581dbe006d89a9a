"""Real time: behavioural events, real-time features, identity links, triggered sequences."""
