//! Dosimetry (issue 4): PSF border extension, activity, kinetics, dose, DVH.
