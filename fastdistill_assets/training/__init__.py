"""Training plane: student trainers, decoupled from any provider."""
