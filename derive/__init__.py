"""Symbolic derivation and code generation for normalization layers."""
