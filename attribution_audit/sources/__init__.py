"""Inputs: images, catalogue manifests, precomputed vectors, labelled queries, the synthetic demo catalogue."""
