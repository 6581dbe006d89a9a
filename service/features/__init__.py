"""Online features: the raw names read from the feature store and the model input vectors."""
