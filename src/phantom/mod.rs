//! Synthetic patients with exact truth (issue 3): CT, SPECT time points, truth labels.
