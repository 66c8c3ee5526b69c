// The stack's alarms, the topic they notify and its dashboard, built from serverless.yml: every
// function gets its alarms (a function added there is watched without an edit here), with
// thresholds from the `alarm*` params. docs/logs-and-metrics.md says what each alarm means and
// what to look at first. JavaScript because YAML cannot repeat a block per function.
//
// Custom metrics are those the functions publish (shared/_metrics.py, CATALOG): an alarm must
// name a metric's exact dimension set, so it watches the sets published for totals (Requests by
// function and status class, ServiceUnavailable by cause), never a per-route one; the dashboard
// shows those through SEARCH, which alarms cannot use.
'use strict';

// Each 503 cause the functions publish (ServiceUnavailable's `cause`), and where to look first.
const CAUSES = {
  pooler_unreachable: 'the pooler or the database refused or dropped connections',
  deadline: 'requests ran out of time waiting on the database',
  statement_timeout: 'queries hit DB_STATEMENT_TIMEOUT_MS',
  serialization: 'transactions failed on serialization or deadlock',
  secret_unavailable: 'the database secret could not be read',
  signing_keys_unavailable: "Supabase's signing keys could not be fetched",
  commit_outcome_unknown: 'connections dropped during COMMIT (the outcome is unknown)',
};
const STATUS_CLASSES = ['2xx', '3xx', '4xx', '5xx'];
// One-minute data; an alarm on a rate or a duration fires when 3 of the last 5 minutes breach,
// so one bad minute does not page anyone. Counts of failures that no client should ever see
// (crashes, throttles) fire on the first 5-minute window that has one.
const MINUTE = 60;
const SUSTAINED = { EvaluationPeriods: 5, DatapointsToAlarm: 3 };
const ANY_IN_FIVE_MINUTES = { Period: 5 * MINUTE, EvaluationPeriods: 1, DatapointsToAlarm: 1 };
const API_STAGE = '$default'; // the framework's HTTP API stage

function number(params, name) {
  const value = Number(params[name]);
  if (!Number.isFinite(value) || value < 0) {
    throw new Error(`${name}: "${params[name]}" is not a number of 0 or more`);
  }
  return value;
}

function pascal(name) {
  return name
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean)
    .map((part) => part[0].toUpperCase() + part.slice(1))
    .join('');
}

function metric(namespace, name, dimensions, stat) {
  return {
    Metric: {
      Namespace: namespace,
      MetricName: name,
      Dimensions: Object.entries(dimensions).map(([Name, Value]) => ({ Name, Value })),
    },
    Period: MINUTE,
    Stat: stat,
  };
}

// `part` as a percentage of the sum of `wholes` ([id, query] pairs of one-minute counts): a minute
// without one of them counts it as 0, a minute without traffic is 0%.
function percentage(part, wholes) {
  const queries = [part, ...wholes].map(([Id, query]) => ({
    Id,
    MetricStat: query,
    ReturnData: false,
  }));
  const filled = (id) => `FILL(${id}, 0)`;
  const whole = wholes.map(([id]) => filled(id)).join(' + ');
  return [
    ...queries,
    {
      Id: 'percent',
      Label: 'percent',
      Expression: `IF(${whole} > 0, 100 * ${filled(part[0])} / (${whole}), 0)`,
      ReturnData: true,
    },
  ];
}

module.exports = async ({ resolveVariable }) => {
  const service = await resolveVariable('self:service');
  const stage = await resolveVariable('sls:stage');
  const provider = await resolveVariable('self:provider');
  const functions = await resolveVariable('self:functions');
  const names = [
    'alarmTopicArn',
    'alarmFunctionErrors',
    'alarmThrottles',
    'alarmDurationPercentOfTimeout',
    'alarmConcurrencyPercent',
    'alarmServerErrorPercent',
    'alarmServiceUnavailablePercent',
    'alarmConnectionBudgetPercent',
  ];
  const params = Object.fromEntries(
    await Promise.all(names.map(async (name) => [name, await resolveVariable(`param:${name}`)]))
  );
  const topicArn = String(params.alarmTopicArn ?? '').trim();
  if (topicArn && !/^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[\w-]+$/.test(topicArn)) {
    throw new Error(`alarmTopicArn: "${topicArn}" is not an SNS topic's ARN`);
  }
  // Custom metrics: the namespace and `service` dimension the functions publish under.
  const namespace = provider.environment.POWERTOOLS_METRICS_NAMESPACE;
  const serviceDimension = provider.environment.POWERTOOLS_SERVICE_NAME;
  const prefix = `${service}-${stage}`;
  const actions = topicArn ? [topicArn] : [{ Ref: 'AlarmTopic' }];
  const resources = {};
  const alarmIds = [];

  function alarm(id, name, description, threshold, properties) {
    alarmIds.push(id);
    resources[id] = {
      Type: 'AWS::CloudWatch::Alarm',
      Properties: {
        AlarmName: `${prefix}-${name}`,
        AlarmDescription: description,
        AlarmActions: actions,
        OKActions: actions,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        Threshold: threshold,
        TreatMissingData: 'notBreaching',
        ...properties,
      },
    };
  }

  function lambdaAlarm(functionName, metricName, stat, window) {
    return {
      Namespace: 'AWS/Lambda',
      MetricName: metricName,
      Dimensions: [{ Name: 'FunctionName', Value: functionName }],
      ...(stat.startsWith('p') ? { ExtendedStatistic: stat } : { Statistic: stat }),
      Period: MINUTE,
      ...window,
    };
  }

  for (const [fn, config] of Object.entries(functions)) {
    const functionName = config.name ?? `${prefix}-${fn}`;
    const id = pascal(fn);
    const timeoutMs = 1000 * Number(config.timeout ?? provider.timeout ?? 6);
    const answersHttp = (config.events ?? []).some((event) => event.httpApi !== undefined);
    alarm(
      `${id}ErrorsAlarm`,
      `${fn}-errors`,
      `${fn}: invocations that crashed, timed out or ran out of memory (Lambda Errors), ` +
        (answersHttp ? "answered by API Gateway's 5xx." : 'so did not run to the end.'),
      number(params, 'alarmFunctionErrors'),
      lambdaAlarm(functionName, 'Errors', 'Sum', ANY_IN_FIVE_MINUTES)
    );
    alarm(
      `${id}ThrottlesAlarm`,
      `${fn}-throttles`,
      `${fn}: invocations refused because all its reserved concurrency was in use.`,
      number(params, 'alarmThrottles'),
      lambdaAlarm(functionName, 'Throttles', 'Sum', ANY_IN_FIVE_MINUTES)
    );
    const percentOfTimeout = number(params, 'alarmDurationPercentOfTimeout');
    alarm(
      `${id}DurationAlarm`,
      `${fn}-duration-near-timeout`,
      `${fn}: p99 duration at ${percentOfTimeout}% of its ${timeoutMs} ms timeout or more.`,
      Math.round((timeoutMs * percentOfTimeout) / 100),
      lambdaAlarm(functionName, 'Duration', 'p99', SUSTAINED)
    );
    if (config.reservedConcurrency !== undefined) {
      const reserved = Number(config.reservedConcurrency);
      const percent = number(params, 'alarmConcurrencyPercent');
      alarm(
        `${id}ConcurrencyAlarm`,
        `${fn}-concurrency`,
        `${fn}: ${percent}% of its reserved concurrency (${reserved}) in use or more; ` +
          'beyond it requests are throttled.',
        Math.max(1, Math.ceil((reserved * percent) / 100)),
        lambdaAlarm(functionName, 'ConcurrentExecutions', 'Maximum', SUSTAINED)
      );
    }
    if (answersHttp) {
      const byClass = (statusClass) =>
        metric(
          namespace,
          'Requests',
          { service: serviceDimension, function: fn, status_class: statusClass },
          'Sum'
        );
      const percent = number(params, 'alarmServerErrorPercent');
      alarm(
        `${id}ServerErrorRateAlarm`,
        `${fn}-server-error-rate`,
        `${fn}: ${percent}% or more of its answers were 5xx.`,
        percent,
        {
          ...SUSTAINED,
          Metrics: percentage(
            ['errors', byClass('5xx')],
            STATUS_CLASSES.map((statusClass) => [`requests${statusClass}`, byClass(statusClass)])
          ),
        }
      );
    }
  }

  const apiRequests = (name) =>
    metric('AWS/ApiGateway', name, { ApiId: { Ref: 'HttpApi' }, Stage: API_STAGE }, 'Sum');
  const apiPercent = number(params, 'alarmServerErrorPercent');
  alarm(
    'ApiServerErrorRateAlarm',
    'api-server-error-rate',
    `The API: ${apiPercent}% or more of all requests answered 5xx, counting those no function ` +
      'answered (crashes, timeouts, throttles).',
    apiPercent,
    {
      ...SUSTAINED,
      Metrics: percentage(['errors', apiRequests('5xx')], [['requests', apiRequests('Count')]]),
    }
  );
  const causePercent = number(params, 'alarmServiceUnavailablePercent');
  for (const [cause, meaning] of Object.entries(CAUSES)) {
    alarm(
      `ServiceUnavailable${pascal(cause)}Alarm`,
      `503-${cause.replaceAll('_', '-')}`,
      `503 ${cause}: ${meaning}, for ${causePercent}% or more of the API's requests.`,
      causePercent,
      {
        ...SUSTAINED,
        Metrics: percentage(
          [
            'unavailable',
            metric(namespace, 'ServiceUnavailable', { service: serviceDimension, cause }, 'Sum'),
          ],
          [['requests', apiRequests('Count')]]
        ),
      }
    );
  }
  const budgetPercent = number(params, 'alarmConnectionBudgetPercent');
  alarm(
    'ConnectionBudgetAlarm',
    'connection-budget',
    `Database connections at ${budgetPercent}% of the connection budget or more ` +
      '(ConnectionBudgetUsed, from the monitor function): new connections will soon be ' +
      'refused. Also when the monitor publishes nothing: it cannot reach the database.',
    budgetPercent,
    {
      // The monitor publishes every minute; silence means it failed, and it answers no client,
      // so no other alarm would see it.
      TreatMissingData: 'breaching',
      Namespace: namespace,
      MetricName: 'ConnectionBudgetUsed',
      Dimensions: [{ Name: 'service', Value: serviceDimension }],
      Statistic: 'Maximum',
      Period: MINUTE,
      ...SUSTAINED,
    }
  );

  if (!topicArn) {
    resources.AlarmTopic = {
      Type: 'AWS::SNS::Topic',
      Properties: { TopicName: `${prefix}-alarms`, DisplayName: `${prefix} alarms` },
    };
  }
  resources.Dashboard = dashboard({
    prefix,
    namespace,
    serviceDimension,
    functions: Object.entries(functions).map(([fn, config]) => [
      fn,
      config.name ?? `${prefix}-${fn}`,
    ]),
    alarmIds,
  });
  return {
    Resources: resources,
    Outputs: {
      AlarmTopicArn: {
        Description: 'Where the alarms notify: subscribe an email, chat or pager to it.',
        Value: topicArn || { Ref: 'AlarmTopic' },
      },
      DashboardName: { Description: 'The CloudWatch dashboard.', Value: { Ref: 'Dashboard' } },
    },
  };
};

// The dashboard's body is JSON with the region, the API's id and the alarms' ARNs in it, known
// only at deploy: it is joined from pieces, as no `${...}` may reach serverless's variables.
function dashboard({ prefix, namespace, serviceDimension, functions, alarmIds }) {
  const REGION = '@@region@@';
  const API = '@@api@@';
  const search = (schema, metricName, stat) => ({
    expression: `SEARCH('{"${namespace}",${schema.join(',')}} service="${serviceDimension}" MetricName="${metricName}"', '${stat}', 60)`,
  });
  const widget = (title, properties, width = 8) => ({
    type: 'metric',
    width,
    height: 6,
    properties: { title, region: REGION, view: 'timeSeries', period: 60, ...properties },
  });
  const perFunction = (metricName, stat) =>
    functions.map(([fn, functionName]) => [
      'AWS/Lambda',
      metricName,
      'FunctionName',
      functionName,
      { stat, label: fn },
    ]);
  const widgets = [
    {
      type: 'alarm',
      width: 24,
      height: 3,
      properties: { title: 'Alarms', alarms: alarmIds.map((id) => `@@alarm:${id}@@`) },
    },
    {
      type: 'log',
      width: 8,
      height: 6,
      properties: {
        title: 'API requests per minute by status (access log)',
        region: REGION,
        view: 'timeSeries',
        query:
          `SOURCE '/aws/http-api/${prefix}' ` +
          "| fields concat(substr(status, 0, 1), 'xx') as status_class " +
          '| stats count(*) as requests by bin(1m), status_class',
      },
    },
    widget('API requests, 4xx and 5xx', {
      stat: 'Sum',
      metrics: ['Count', '4xx', '5xx'].map((name) => [
        'AWS/ApiGateway',
        name,
        'ApiId',
        API,
        'Stage',
        API_STAGE,
      ]),
    }),
    widget('API latency (ms)', {
      metrics: [
        ['AWS/ApiGateway', 'Latency', 'ApiId', API, 'Stage', API_STAGE, { stat: 'p99' }],
        ['AWS/ApiGateway', 'IntegrationLatency', 'ApiId', API, 'Stage', API_STAGE, { stat: 'p99' }],
        ['AWS/ApiGateway', 'Latency', 'ApiId', API, 'Stage', API_STAGE, { stat: 'p50' }],
      ],
    }),
    widget('Requests by function and status class', {
      metrics: [[search(['function', 'service', 'status_class'], 'Requests', 'Sum')]],
    }),
    widget('503s by cause', {
      metrics: [[search(['cause', 'service'], 'ServiceUnavailable', 'Sum')]],
    }),
    widget('Latency p99 by route (ms)', {
      metrics: [[search(['function', 'route', 'service'], 'Latency', 'p99')]],
    }),
    widget('Lambda duration p99 (ms)', { metrics: perFunction('Duration', 'p99') }),
    widget('Lambda errors and throttles', {
      stat: 'Sum',
      metrics: [...perFunction('Errors', 'Sum'), ...perFunction('Throttles', 'Sum')],
    }),
    widget('Concurrent executions', { metrics: perFunction('ConcurrentExecutions', 'Maximum') }),
    widget('Connection budget used (%)', {
      metrics: [[namespace, 'ConnectionBudgetUsed', 'service', serviceDimension, { stat: 'Maximum' }]],
      yAxis: { left: { min: 0, max: 100 } },
    }),
    widget('Database connections', {
      metrics: [
        [namespace, 'DatabaseConnectionsTotal', 'service', serviceDimension, { stat: 'Maximum' }],
        [namespace, 'DatabaseMaxConnections', 'service', serviceDimension, { stat: 'Maximum' }],
        [namespace, 'PoolerClients', 'service', serviceDimension, { stat: 'Maximum' }],
        [search(['service', 'state'], 'DatabaseConnections', 'Maximum')],
      ],
    }),
    widget('New connections and their connect time p99 (ms)', {
      metrics: [
        [search(['connection', 'function', 'service'], 'DatabaseConnects', 'Sum')],
        [search(['function', 'service'], 'DatabaseConnectTime', 'p99')],
      ],
    }),
    widget('Cold starts and refused tokens', {
      metrics: [
        [search(['function', 'service'], 'ColdStart', 'Sum')],
        [search(['function', 'reason', 'service'], 'TokenRefused', 'Sum')],
      ],
    }),
  ];
  // SEARCH expressions need an id each when a widget holds more than one.
  let expressions = 0;
  for (const each of widgets) {
    for (const line of each.properties.metrics ?? []) {
      if (line[0].expression) line[0].id = `e${(expressions += 1)}`;
    }
  }
  const pieces = JSON.stringify({ widgets }).split(/(@@[^@]+@@)/);
  return {
    Type: 'AWS::CloudWatch::Dashboard',
    Properties: {
      DashboardName: prefix,
      DashboardBody: {
        'Fn::Join': [
          '',
          pieces.map((piece) => {
            if (piece === REGION) return { Ref: 'AWS::Region' };
            if (piece === API) return { Ref: 'HttpApi' };
            const alarmId = /^@@alarm:(\w+)@@$/.exec(piece);
            return alarmId ? { 'Fn::GetAtt': [alarmId[1], 'Arn'] } : piece;
          }),
        ],
      },
    },
  };
}
