DROP TABLE attempts;
DROP TABLE jobs;
DROP TABLE inbound_events;
DROP TABLE subscribers;
