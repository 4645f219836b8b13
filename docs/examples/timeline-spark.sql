-- A case's timeline as a Spark SQL table: Spark 3.x, EMR, Glue jobs, Databricks.
-- Replace the LOCATION with the case's timeline folder (s3://, abfss://, dbfs:/, a path).
-- The folders are log_source=<source>/event_date=<YYYY-MM-DD>: a filter on either key
-- reads only the folders it names. Every file also holds the whole timeline schema.
-- tests/test_timeline_layout.py runs this file against a timeline cloudir built.
CREATE TABLE cloudir_timeline (
  `timestamp` TIMESTAMP,
  timestamp_desc STRING,
  source STRING,
  artifact STRING,
  host STRING,
  `user` STRING,
  src_ip STRING,
  action STRING,
  target STRING,
  outcome STRING,
  message STRING,
  evidence_id STRING,
  event_id STRING,
  raw STRING,
  promoted_from STRING,
  raw_eventSource STRING,
  raw_eventName STRING,
  raw_errorCode STRING,
  raw_sourceIPAddress STRING,
  raw_userAgent STRING,
  raw_recipientAccountId STRING,
  raw_awsRegion STRING,
  raw_eventType STRING,
  raw_readOnly STRING,
  raw_sessionCredentialFromConsole STRING,
  raw_vpcEndpointId STRING,
  raw_userIdentity_type STRING,
  raw_userIdentity_arn STRING,
  raw_userIdentity_accountId STRING,
  raw_userIdentity_accessKeyId STRING,
  raw_userIdentity_userName STRING,
  raw_userIdentity_principalId STRING,
  raw_userIdentity_invokedBy STRING,
  raw_userIdentity_sessionContext_attributes_mfaAuthenticated STRING,
  raw_userIdentity_sessionContext_sessionIssuer_type STRING,
  raw_userIdentity_sessionContext_sessionIssuer_arn STRING,
  raw_userIdentity_sessionContext_sessionIssuer_userName STRING,
  log_source STRING,
  event_date DATE
)
USING parquet
PARTITIONED BY (log_source, event_date)
LOCATION 's3://BUCKET/cases/case-42/timeline/';

-- register the partitions the folder holds (again after every `cloudir timeline`)
ALTER TABLE cloudir_timeline RECOVER PARTITIONS;
