"""Samplers of the SGLD family and MALA, one file per algorithm."""
