//! switchyard: resilience and routing middleware for tower.
