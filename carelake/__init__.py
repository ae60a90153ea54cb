"""carelake: regional hospital feeds -> FHIR R4 -> de-identified Delta tables."""
