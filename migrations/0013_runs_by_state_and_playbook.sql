-- /metrics counts ended runs by state and playbook on every scrape: this index answers that
-- from the index alone, without reading each run's row (its facts and outcome).
CREATE INDEX runs_state_playbook ON runs (state, playbook);
