# The contract of docs/command-protocol.md ("Long-lived handler programs"),
# checked against real program processes over pipes.
require_relative "test_helper"

class ProtocolTest < Minitest::Test
  include ProgramTesting

  def test_hello_lists_every_handler_with_its_version
    hello = start_program.hello

    assert_equal "hello", hello["op"]
    assert_equal 1, hello["protocol"]
    assert_match(/\Adistribot-ruby \d+\.\d+\.\d+\z/, hello["program"])
    handlers = hello["handlers"].to_h { |handler| [handler["name"], handler["version"]] }
    assert_equal "2.1.0", handlers["Squarer"]
    assert_equal "1.0.0", handlers["CallbackLister"], "MAJOR.MINOR is sent as MAJOR.MINOR.0"
    assert_equal "0.0.0", handlers["Placeholder"], "namespaced classes go by their last name"
    assert_equal "0.0.0", handlers["Relabelled"]
    refute handlers.key?("Renamed")
  end

  def test_enumerate_returning_jobs_and_process_returning_output
    program = start_program
    program.send_request(enumerate_request(1, "Squarer"))
    program.send_request(process_request(2, "Squarer", 7))

    answers = program.answers_to([1, 2])
    assert_equal({ "id" => 1, "jobs" => [0, 1, 2] }, answers[1])
    assert_equal({ "id" => 2, "output" => 49 }, answers[2])
  end

  def test_enumerate_in_the_callback_style_and_process_returning_nil
    program = start_program
    program.send_request(enumerate_request(1, "CallbackLister", "data" => { "n" => 2 }))
    program.send_request(process_request(2, "CallbackLister", "a"))

    answers = program.answers_to([1, 2])
    assert_equal({ "id" => 1, "jobs" => %w[a b] }, answers[1])
    assert_equal({ "id" => 2 }, answers[2], "no output field when process returns nil")
  end

  def test_a_class_without_methods_has_one_nil_job_that_succeeds
    program = start_program
    program.send_request(enumerate_request(1, "Placeholder"))
    program.send_request(process_request(2, "Placeholder", nil))

    answers = program.answers_to([1, 2])
    assert_equal({ "id" => 1, "jobs" => [nil] }, answers[1])
    assert_equal({ "id" => 2 }, answers[2])
  end

  def test_context_fields
    program = start_program
    error = { "phase" => "p", "handler" => "H", "job_id" => nil, "attempts" => 1, "message" => "m" }
    outputs = { "before" => { "H" => [1] } }
    program.send_request(enumerate_request(1, "ContextEcho", "outputs" => outputs, "error" => error))
    program.send_request(process_request(2, "ContextEcho", 5, "attempt" => 3))

    answers = program.answers_to([1, 2])
    assert_equal [{ "flow_id" => "f1", "workflow" => "tests", "phase" => "testing", "handler" => "ContextEcho",
                    "version" => "1.0.0", "data" => { "n" => 3 }, "outputs" => outputs, "error" => error }],
                 answers[1]["jobs"]
    assert_equal({ "flow_id" => "f1", "workflow" => "tests", "phase" => "testing", "handler" => "ContextEcho",
                   "version" => "1.0.0", "job_id" => "f1.1.0.2", "attempt" => 3, "data" => { "n" => 3 } },
                 answers[2]["output"])
  end

  def test_many_outstanding_requests_are_answered_out_of_order_exactly_once
    program = start_program
    ids = (1..64).to_a
    ids.each { |id| program.send_request(process_request(id, "Reverser", id - 1)) }

    order = []
    answers = {}
    ids.size.times do
      answer = program.next_answer
      refute answers.key?(answer["id"]), "request #{answer['id']} answered twice"
      answers[answer["id"]] = answer
      order << answer["id"]
    end
    assert_equal ids, answers.keys.sort
    ids.each { |id| assert_equal id - 1, answers[id]["output"] }
    refute_equal ids, order, "slow early jobs must not hold back quick later ones"

    program.close_stdin
    assert_equal "", program.stdout.rest, "no answer beyond one per request"
    assert program.wait_for_exit.success?
  end

  def test_errors_say_whether_to_retry
    program = start_program
    %w[retry fail bug unimplemented].each_with_index { |job, i| program.send_request(process_request(i + 1, "Failer", job)) }

    answers = program.answers_to([1, 2, 3, 4])
    assert_equal({ "message" => "the page server answered 503", "retryable" => true }, answers[1]["error"])
    assert_equal({ "message" => "the page does not exist", "retryable" => false }, answers[2]["error"])
    assert_equal({ "message" => "ArgumentError: no such page", "retryable" => true }, answers[3]["error"])
    assert_equal({ "message" => "NotImplementedError: later", "retryable" => true }, answers[4]["error"])

    backtrace = JSON.parse(program.log_line_matching(/"id":3,/))
    assert_match(/\AArgumentError: no such page\n\tfrom .*handlers\.rb:\d+/, backtrace["log"])
  end

  def test_unencodable_output_fails_the_job_and_the_program_goes_on
    program = start_program
    %w[nan bytes object].each_with_index { |job, i| program.send_request(process_request(i + 1, "Unencodable", job)) }
    program.send_request(process_request(4, "Squarer", 3))

    answers = program.answers_to([1, 2, 3, 4])
    (1..3).each do |id|
      assert_equal false, answers[id]["error"]["retryable"], answers[id].inspect
      assert_match(/the output of Unencodable#process cannot be encoded as JSON/, answers[id]["error"]["message"])
    end
    assert_match(/no JSON for this/, answers[3]["error"]["message"])
    assert_equal 9, answers[4]["output"]
  end

  def test_enumerate_must_give_a_list
    program = start_program
    program.send_request(enumerate_request(1, "BadEnumerate"))
    program.send_request(enumerate_request(2, "BadEnumerate", "data" => { "n" => { "a" => 1 } }))

    answers = program.answers_to([1, 2])
    assert_equal({ "message" => "BadEnumerate#enumerate gave Integer, not an Array of jobs", "retryable" => false },
                 answers[1]["error"])
    assert_match(/gave Hash/, answers[2]["error"]["message"])
  end

  def test_requests_the_program_cannot_serve_get_error_answers
    program = start_program
    program.send_request(process_request(1, "Nobody", 1))
    program.send_request({ "id" => 2, "op" => "transmogrify" })
    program.send_request(process_request(3, "Squarer", 2))

    answers = program.answers_to([1, 3])
    assert_equal false, answers[1]["error"]["retryable"]
    assert_match(/no handler "Nobody" \(it hosts Squarer, /, answers[1]["error"]["message"])
    # An unknown op is logged, not answered: it may name an outstanding request.
    refute answers.key?(2)
    assert program.log_line_matching(/op "transmogrify" is unknown/)
  end

  def test_lines_without_an_id_are_logged_and_skipped
    program = start_program
    program.send_request("this is not JSON")
    program.send_request("[1, 2]")
    program.send_request(process_request(1, "Squarer", 2))

    assert_equal({ "id" => 1, "output" => 4 }, program.next_answer)
    assert_match(/ignored a request line because it is not JSON/, program.log_line_matching(/not JSON/))
    assert_match(/"\[1, 2\]\\n"/, program.log_line_matching(/no integer id/))
  end

  def test_cancel_reaches_the_running_handler_and_its_answer_is_not_sent
    program = start_program
    program.send_request(process_request(1, "Waiter", nil))
    assert_equal({ "id" => 1, "log" => "started" }, JSON.parse(program.log_line_matching(/"id":1,/)))
    program.send_request({ "id" => 1, "op" => "cancel", "reason" => "timeout" })

    assert_equal({ "id" => 1, "log" => "stopped: timeout" }, JSON.parse(program.log_line_matching(/"id":1,/)))
    program.close_stdin
    assert_equal "", program.stdout.rest
    assert program.wait_for_exit.success?
  end

  def test_a_request_canceled_before_it_starts_never_runs
    program = start_program(env: { "DISTRIBOT_IN_FLIGHT" => "1" })
    program.send_request(process_request(1, "Waiter", nil))
    assert_equal({ "id" => 1, "log" => "started" }, JSON.parse(program.log_line_matching(/"id":1,/)))
    # The only thread is busy with request 1, so request 2 waits in line.
    program.send_request(process_request(2, "Waiter", nil))
    program.send_request({ "id" => 2, "op" => "cancel", "reason" => "paused" })
    program.send_request({ "id" => 1, "op" => "cancel", "reason" => "shutdown" })
    program.close_stdin

    assert_equal "", program.stdout.rest
    assert program.wait_for_exit.success?
    logs = program.stderr.rest.lines.map { |line| JSON.parse(line) }
    assert_equal [{ "id" => 1, "log" => "stopped: shutdown" }], logs
  end

  def test_what_a_handler_prints_becomes_log_lines_of_its_request
    program = start_program
    program.send_request(process_request(7, "Talker", "x"))

    assert_equal({ "id" => 7, "output" => "x" }, program.next_answer)
    program.close_stdin
    assert_equal "", program.stdout.rest, "nothing printed reaches stdout"
    assert program.wait_for_exit.success?

    lines = program.stderr.rest.lines.map(&:chomp)
    logs = lines.filter_map { |line| JSON.parse(line) rescue nil }
    assert(logs.all? { |log| log["id"] == 7 }, logs.inspect)
    messages = logs.map { |log| log["log"] }
    ["hello from job x", "in pieces", "a warning", "to stderr", "through the context", "unterminated"].each do |message|
      assert_includes messages, message
    end
    # Writes to fd 1 by other routes cannot reach the answers either.
    assert_includes lines, "to the STDOUT constant"
    assert_includes lines, "from a child process"
  end

  def test_closing_stdin_finishes_outstanding_work_then_exits_zero
    program = start_program
    program.send_request(process_request(1, "Reverser", 0))
    program.close_stdin

    assert_equal({ "id" => 1, "output" => 0 }, program.next_answer)
    assert_nil program.next_answer
    assert_equal 0, program.wait_for_exit.exitstatus
  end

  def test_two_classes_with_one_name_stop_the_program_before_its_hello
    program = ProgramProcess.new("duplicate_names.rb")
    status = program.wait_for_exit
    refute status.success?
    assert_equal "", program.stdout.rest
    assert_match(/handler name "Invoicer" is registered twice: by Billing::Invoicer and by Shipping::Invoicer/,
                 program.stderr.rest)
  end
end
