-- A case's timeline as an Athena table (engine v3), which also puts it in the Glue Data
-- Catalog for Glue jobs, EMR and Redshift Spectrum. Replace both s3:// locations with the
-- case's timeline folder. Partition projection: no crawler and no MSCK REPAIR TABLE after a
-- rebuild; a query that filters on event_date (and log_source) reads only those folders.
-- The sources are those cloudir's parsers write (docs/DESIGN.md, the timeline's `source`).
CREATE EXTERNAL TABLE cloudir_timeline (
  `timestamp` timestamp,
  timestamp_desc string,
  source string,
  artifact string,
  host string,
  `user` string,
  src_ip string,
  action string,
  target string,
  outcome string,
  message string,
  evidence_id string,
  event_id string,
  raw string,
  promoted_from string,
  raw_eventSource string,
  raw_eventName string,
  raw_errorCode string,
  raw_sourceIPAddress string,
  raw_userAgent string,
  raw_recipientAccountId string,
  raw_awsRegion string,
  raw_eventType string,
  raw_readOnly string,
  raw_sessionCredentialFromConsole string,
  raw_vpcEndpointId string,
  raw_userIdentity_type string,
  raw_userIdentity_arn string,
  raw_userIdentity_accountId string,
  raw_userIdentity_accessKeyId string,
  raw_userIdentity_userName string,
  raw_userIdentity_principalId string,
  raw_userIdentity_invokedBy string,
  raw_userIdentity_sessionContext_attributes_mfaAuthenticated string,
  raw_userIdentity_sessionContext_sessionIssuer_type string,
  raw_userIdentity_sessionContext_sessionIssuer_arn string,
  raw_userIdentity_sessionContext_sessionIssuer_userName string
)
PARTITIONED BY (log_source string, event_date string)
STORED AS PARQUET
LOCATION 's3://BUCKET/cases/case-42/timeline/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.log_source.type' = 'enum',
  'projection.log_source.values' = 'cloudtrail,host,container,alert,response',
  'projection.event_date.type' = 'date',
  'projection.event_date.format' = 'yyyy-MM-dd',
  'projection.event_date.range' = '2006-01-01,NOW',
  'projection.event_date.interval' = '1',
  'projection.event_date.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://BUCKET/cases/case-42/timeline/log_source=${log_source}/event_date=${event_date}/'
);

-- for example: one day's refused calls
-- SELECT "timestamp", "user", action, outcome FROM cloudir_timeline
-- WHERE event_date = '2024-07-31' AND log_source = 'cloudtrail' AND outcome <> 'success';
