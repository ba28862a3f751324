"""Talking to Gemini: the gateway (the only importer of google.genai), the retry policy, models, prices, estimates."""
